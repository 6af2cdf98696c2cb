from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from icon_pipeline.library.sources.figma import FigmaClient


class FigmaResource(ConfigurableResource):
    """Figma REST API access. The token comes from FIGMA_TOKEN and is never logged."""

    token_env_var: str = "FIGMA_TOKEN"
    max_retry_after_s: float = Field(default=60.0, description="longer 429 waits fail instead of sleeping")
    max_retries: int = 4
    ids_per_request: int = 100

    def client(self, api_url: str, file_keys: list[str]) -> FigmaClient:
        token = os.environ.get(self.token_env_var)
        if not token:
            raise ValueError(
                f"Figma source for file(s) {', '.join(file_keys)} needs a token: set {self.token_env_var}"
            )
        return FigmaClient(
            token=token,
            api_url=api_url,
            max_retries=self.max_retries,
            max_retry_after_s=self.max_retry_after_s,
            ids_per_request=self.ids_per_request,
        )
