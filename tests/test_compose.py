"""docker-compose.yml (README, "Running at scale"): no Docker engine runs here, so check what can be checked:
the YAML parses, its services are the documented ones, and every file, command and setting it uses exists
and loads."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bot.config import load_settings
from bot.shards import ShardScope

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    yaml = importlib.import_module("yaml")  # PyYAML (dev dependency)
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_starts_postgres_and_two_bots_with_two_shards_each() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "bot-a", "bot-b"}
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    user = postgres["environment"]["POSTGRES_USER"]
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    database = postgres["environment"]["POSTGRES_DB"]
    scopes = []
    env = {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    for name in ("bot-a", "bot-b"):
        bot = services[name]
        assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert bot["env_file"] == ".env"
        command = bot["command"]
        assert command[:2] == ["python", "run.py"] and command[2] == "--config"
        # The config the command names is mounted from a file in this repository.
        mounts = dict(v.split(":")[:2][::-1] for v in bot["volumes"] if v.startswith("./"))
        source = ROOT / mounts[command[3]]
        assert source.is_file(), source
        settings = load_settings(source, env)
        assert settings.database.url == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{database}"
        assert settings.discord.shard_count == 4 and len(settings.discord.shard_ids) == 2
        assert settings.security.secret_key_file.startswith("/data/")
        assert settings.section("horde_pacer")["processes"] == 2  # two processes share the IP's limits
        scopes.append(ShardScope(settings.discord.shard_count, settings.discord.shard_ids))
    # Together the two processes hold every shard exactly once.
    assert sorted(s for scope in scopes for s in scope.ids) == [0, 1, 2, 3]
    # The image the bots run is the repository's Dockerfile, which has run.py.
    assert (
        services["bot-a"]["build"] == "." and (ROOT / "Dockerfile").is_file() and (ROOT / "run.py").is_file()
    )
    assert services["bot-b"]["image"] == services["bot-a"]["image"]


def test_readme_documents_running_at_scale() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Running at scale" in readme and "docker compose up" in readme
