"""The ``web:`` section of a bench file: the live bench page and who may use its controls."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daq.config.sinks import SecretSource


class WebConfig(BaseModel):
    """Viewing is open to whoever reaches the port (127.0.0.1 by default); controls are opt-in.

    With ``controls: true`` the page offers pause, resume, abort and acknowledge, and every such
    request must carry ``token`` (read from an env variable or a file, never the bench file).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    controls: bool = Field(default=False, description="offer pause/resume/abort/acknowledge on the page")
    token: SecretSource | None = Field(default=None, description="operator token the controls require")
    trend_window_s: Annotated[float, Field(gt=10, le=3600)] = Field(
        default=600, description="how much history the trend plots keep (wall seconds)"
    )

    @model_validator(mode="after")
    def _controls_need_token(self) -> WebConfig:
        if self.controls and self.token is None:
            raise ValueError("controls: true needs token: {env: VARIABLE} or {file: PATH}; controls are never open")
        return self
