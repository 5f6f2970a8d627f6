"""Which wheels may go into a Lambda package, and the wheel cache (no network: pip is injected)."""

import pytest

from infra.deploy import wheels
from imagepipe.errors import ConfigError


@pytest.mark.parametrize("tag, runs", [
    ("cp312-cp312-manylinux_2_28_x86_64", True),
    ("cp312-cp312-manylinux2014_x86_64", True),
    ("cp312-abi3-manylinux_2_17_x86_64", True),
    ("py3-none-any", True),
    ("cp311-cp311-linux_x86_64", False),       # built on this machine
    ("cp311-cp311-manylinux_2_28_x86_64", False),  # another Python
    ("cp312-cp312-manylinux_2_28_aarch64", False),  # another architecture
    ("cp312-cp312-manylinux_2_39_x86_64", False),   # needs a newer glibc than the runtime's
    ("cp312-cp312-musllinux_1_2_x86_64", False),
])
def test_wheel_tags_that_load_on_the_lambda_runtime(tag, runs):
    assert wheels.tag_runs_on_lambda(tag) is runs


def test_requirements_must_be_exact_pins(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# comment\npillow==13.0.0  # why\n\nmoto[s3]==5.2.5\n")
    assert wheels.pinned_requirements(good) == ["pillow==13.0.0", "moto[s3]==5.2.5"]
    bad = tmp_path / "bad.txt"
    bad.write_text("pika>=1.4\n")
    with pytest.raises(ConfigError, match=r"bad.txt:1: 'pika>=1.4' is not an exact pin"):
        wheels.pinned_requirements(bad)


def test_wheels_are_downloaded_once_then_served_from_the_cache(tmp_path):
    calls = []

    def download(pins, dest):
        calls.append(list(pins))
        (dest / "pika-1.4.4-py3-none-any.whl").write_bytes(b"wheel")

    first = wheels.lambda_wheels(["pika==1.4.4"], tmp_path, download)
    second = wheels.lambda_wheels(["pika==1.4.4"], tmp_path, download)
    assert first == second == [tmp_path / "pika-1.4.4-py3-none-any.whl"]
    assert calls == [["pika==1.4.4"]]
    (tmp_path / "pika-1.4.4-py3-none-any.whl").unlink()  # a pruned cache downloads again
    wheels.lambda_wheels(["pika==1.4.4"], tmp_path, download)
    assert len(calls) == 2
    assert wheels.lambda_wheels([], tmp_path, download) == []


def test_a_failed_download_is_an_error_not_a_build(tmp_path):
    def download(pins, dest):
        raise wheels.WheelError("pip could not download wheels for python3.12/x86_64 (x==1)")

    with pytest.raises(wheels.WheelError, match="could not download"):
        wheels.lambda_wheels(["x==1"], tmp_path, download)
    assert not list(tmp_path.glob("*.json"))  # nothing cached


def test_a_source_only_package_is_named_pips_way_and_must_be_pinned(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("pillow==13.0.0\n# pure Python, source only\n--no-binary pyvips\npyvips==3.2.0\n")
    assert wheels.pinned_requirements(good) == ["pillow==13.0.0", "pyvips==3.2.0"]
    assert wheels.built_from_source(good) == {"pyvips"}
    bad = tmp_path / "bad.txt"
    bad.write_text("--no-binary=pyvips,Some_Thing\npyvips==3.2.0\n")
    with pytest.raises(ConfigError, match="--no-binary some-thing is not pinned there"):
        wheels.built_from_source(bad)


def test_a_source_only_package_is_built_and_taken_only_as_a_wheel_lambda_loads(tmp_path):
    downloaded, built = [], []

    def download(pins, dest):
        downloaded.append(list(pins))
        (dest / "pillow-13.0.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")

    def build(pins, dest):
        built.append(list(pins))
        (dest / "pyvips-3.2.0-py3-none-any.whl").write_bytes(b"wheel")

    pins = ["pillow==13.0.0", "pyvips==3.2.0"]
    got = wheels.lambda_wheels(pins, tmp_path / "a", download, frozenset({"pyvips"}), build)

    assert [w.name for w in got] == ["pillow-13.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                                     "pyvips-3.2.0-py3-none-any.whl"]
    assert downloaded == [["pillow==13.0.0"]] and built == [["pyvips==3.2.0"]]

    def build_for_this_machine(pins, dest):
        (dest / "pyvips-3.2.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")

    with pytest.raises(wheels.WheelError, match="cp311-cp311-linux_x86_64.whl, which would not load"):
        wheels.lambda_wheels(pins, tmp_path / "b", download, frozenset({"pyvips"}),
                             build_for_this_machine)
    assert not list((tmp_path / "b").glob("*.json"))  # nothing cached


@pytest.mark.parametrize("name, tags", [
    ("pyvips-3.2.0-py3-none-any.whl", ["py3-none-any"]),
    ("six-1.17.0-py2.py3-none-any.whl", ["py2-none-any", "py3-none-any"]),
    ("pillow-13.0.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
     ["cp312-cp312-manylinux_2_27_x86_64", "cp312-cp312-manylinux_2_28_x86_64"]),
    ("pyvips-3.2.0.tar.gz", []),
])
def test_the_tags_a_wheels_file_name_claims(name, tags):
    assert wheels.filename_tags(name) == tags


def test_function_pins_match_the_repositorys_so_lambda_runs_what_the_tests_ran():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    repository = {p.split("==")[0].split("[")[0].lower(): p.split("==")[1]
                  for p in wheels.pinned_requirements(root / "requirements.txt")}
    functions = sorted((root / "functions").glob("*/requirements.txt"))
    assert len(functions) >= 2
    for path in functions:
        for pin in wheels.pinned_requirements(path):
            name, version = pin.split("==")
            assert repository.get(name.lower()) == version, f"{path}: {pin}"


def test_function_packages_come_from_the_projects_runtime_dependencies():
    """A function carries only what the runtime core declares (``pip install imagepipe`` and
    its engine extra) and what those need, never a development package."""
    import re
    import tomllib
    from importlib import metadata
    from pathlib import Path

    def name(spec: str) -> str:
        return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0]).lower()

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["vips"]
    runtime, todo = set(), [name(spec) for spec in declared]
    while todo:  # and their dependencies, as installed here (requirements.txt's pins)
        package = todo.pop()
        if package not in runtime:
            runtime.add(package)
            todo += [name(r) for r in metadata.requires(package) or () if "extra ==" not in r]
    for path in sorted((root / "functions").glob("*/requirements.txt")):
        for pin in wheels.pinned_requirements(path):
            assert name(pin) in runtime, f"{path}: {pin}"
