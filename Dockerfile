FROM python:3.11-slim

# Unprivileged user; everything the bot writes (database, generated secret key, safety review file: every
# "data/..." path of the shipped config) lives on a volume it owns.
RUN useradd --create-home --uid 10001 hordebot && mkdir -p /data && chown hordebot:hordebot /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY run.py config.example.toml ./
RUN pip install --no-cache-dir . && cp config.example.toml /app/config.toml \
    && sed -i 's#sqlite+aiosqlite:///data/#sqlite+aiosqlite:////data/#; s#= "data/#= "/data/#' /app/config.toml

USER hordebot
VOLUME ["/data"]
# DISCORD_TOKEN and HORDEBOT_SECRET_KEY come from the environment (docker run -e / --env-file).
# Mount your own config with -v ./config.toml:/app/config.toml:ro
CMD ["python", "run.py", "--config", "/app/config.toml"]
