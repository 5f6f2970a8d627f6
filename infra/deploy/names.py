"""Stack and function names of a stage: spelled here once, passed to every template that needs them.

Function names follow ``chalice deploy``'s convention (``{app}-{stage}`` for the API handler,
``{app}-{stage}-{function}`` for the others), so the infra stack can grant and wire a function
that its own stack creates later.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagepipe.settings import Settings


@dataclass(frozen=True)
class Names:
    infra_stack: str
    upload_api_function: str
    object_created_function: str
    resize_function: str

    @classmethod
    def of(cls, manifest: dict, settings: Settings) -> "Names":
        app, stage = manifest["app_name"], settings.stage
        return cls(
            infra_stack=f"{app}-{stage}",
            upload_api_function=f"{app}-upload-{stage}",
            object_created_function=f"{app}-upload-{stage}-on_object_created",
            # The bridge invokes this name (IMAGEPIPE_RESIZE_FUNCTION): the stage's setting.
            resize_function=settings.resize_function or f"{app}-resize-{stage}-resize",
        )

    def function_stack(self, function: str) -> str:
        """The stack of a ``chalicefile.json`` function (``upload``, ``resize``)."""
        return f"{self.infra_stack}-{function}"

    def function_parameters(self) -> dict[str, str]:
        return {
            "UploadApiFunctionName": self.upload_api_function,
            "ObjectCreatedFunctionName": self.object_created_function,
            "ResizeFunctionName": self.resize_function,
        }
