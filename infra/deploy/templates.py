"""CloudFormation templates as plain dicts, read with cfn-lint's decoder.

The decoder turns YAML short forms (``!Ref``, ``!Sub``, ``!GetAtt``...) into their long forms
(``{"Ref": ...}``), so templates can be inspected, changed and written back as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from imagepipe.errors import ConfigError


def load(path: str | Path) -> dict:
    from cfnlint.decode import cfn_json, cfn_yaml

    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix == ".json":
            return _plain(cfn_json.loads(text))
        return _plain(cfn_yaml.loads(text, str(path)))
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable template: {exc}") from None


def dump(template: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(template, indent=2, sort_keys=True) + "\n")
    return path


def _plain(value):
    # cfn-lint's nodes carry line marks; plain containers compare and copy like any dict.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def lint(paths, regions=("us-east-1",)) -> list[str]:
    """cfn-lint's findings (errors and warnings) on each template, one line each; empty if clean."""
    from cfnlint.api import ManualArgs, lint_file

    findings = []
    for path in paths:
        matches = lint_file(Path(path), ManualArgs(regions=list(regions)))
        findings += [f"{path}:{m.linenumber}: {m.rule.id} {m.message}"
                     + (f" at {'/'.join(map(str, m.path))}" if getattr(m, "path", None) else "")
                     for m in matches]
    return findings
