"""docker-compose.yml (README, "Running at scale"): no Docker engine runs here, so check what can be checked:
the YAML parses, its services are the documented ones, and every file, command and setting it uses exists
and loads; the image's file tree, laid out as the Dockerfile copies it, migrates a database and imports every
module from that tree alone."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bot.config import load_settings
from bot.shards import ShardScope

ROOT = Path(__file__).resolve().parent.parent


def _clean_env() -> dict[str, str]:
    """The environment without anything that points Python at this repository."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


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


def _image_tree(app: Path) -> Path:
    """Lay out /app as the Dockerfile builds it (its COPY lines, then its edit of the shipped config), in
    `app`. Returns the image's config.toml."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies, "the Dockerfile copies nothing"
    for *sources, dest in copies:
        target = app / dest.removeprefix("/app").lstrip("./")
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    edit = re.search(
        r"cp config\.example\.toml /app/config\.toml\s*\\?\s*&&\s*sed -i '([^']+)' /app/config\.toml",
        dockerfile,
    )
    assert edit, "the Dockerfile no longer makes /app/config.toml from config.example.toml with sed"
    config = app / "config.toml"
    shutil.copy2(app / "config.example.toml", config)
    subprocess.run(["sed", "-i", edit.group(1), str(config)], check=True)
    return config


def test_image_tree_runs_run_py_with_everything_on_the_data_volume(tmp_path: Path) -> None:
    """No Docker engine here to build the image, so build its file tree: everything `python run.py` imports
    (the bot, every cog, the migrations and the word lists) is among what the Dockerfile copies, and the
    shipped config it edits keeps every file the bot writes on the /data volume."""
    app = tmp_path / "app"
    config = _image_tree(app)
    settings = load_settings(
        config, {"DISCORD_TOKEN": "tok", "HORDEBOT_SECRET_KEY": Fernet.generate_key().decode()}
    )
    assert settings.database.url == "sqlite+aiosqlite:////data/hordebot.db"
    assert settings.security.secret_key_file == "/data/secret.key"
    assert settings.section("safety")["review_file"] == "/data/safety_review.txt"
    assert "data/" not in config.read_text().replace("/data/", "")
    # Import run.py and every module of the bot and the cogs from the image's tree alone, as `python
    # run.py` in WORKDIR /app does (its own folder first on the path).
    probe = (
        "import asyncio, importlib, pkgutil, sys, run, bot, cogs\n"
        "for pkg in (bot, cogs):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.startswith('bot.db.migrations.'):  # Alembic's scripts: run by the migration\n"
        "            importlib.import_module(m.name)\n"
        "from bot.db import Database\n"
        "from bot.safety.filter import PromptFilter\n"
        "async def migrate():\n"
        "    db = Database(sys.argv[1])\n"
        "    await db.connect()\n"
        "    await db.close()\n"
        "asyncio.run(migrate())\n"
        "assert PromptFilter().check('a cat in a hat').allowed\n"
        "print('\\n'.join(str(getattr(m, '__file__', '')) for n, m in list(sys.modules.items())\n"
        "                 if n.split('.')[0] in ('bot', 'cogs', 'run')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"],
        cwd=app,
        capture_output=True,
        text=True,
        check=False,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.splitlines() if line]
    assert files and all(f.is_relative_to(app) for f in files), [
        f for f in files if not f.is_relative_to(app)
    ]
