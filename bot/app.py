"""The factory: settings in, a fully wired bot out. No globals, no work at import time."""

from __future__ import annotations

import gc
from functools import partial

import discord
import httpx
import yarl

from bot.bot import HordeBot, ShardedHordeBot
from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.crypto import KeyCipher
from bot.db import Database
from bot.db.alchemy_text_jobs import JobRepository
from bot.db.chat import ChatRepository
from bot.db.generation import GenerationJobRepository
from bot.db.guild_settings import GuildSettingsRepository
from bot.db.kudos import KudosRepository
from bot.db.leases import Lease, database_time, process_holder
from bot.db.parties import PartyRepository
from bot.db.presets import PresetRepository
from bot.db.ratings import RatingsRepository
from bot.db.retention import RetentionRepository
from bot.db.roles import RolesRepository
from bot.db.safety import SafetyRepository
from bot.db.sharedkeys import SharedKeyRepository
from bot.db.sources import SourceImageStore
from bot.db.users import UserRepository
from bot.horde.civitai import CivitaiClient
from bot.horde.client import HordeClient, build_http_client
from bot.horde.pacer import Pacer
from bot.horde.ratings import RatingsClient
from bot.logs import SeenSecrets
from bot.runtime import Runtime
from bot.safety import PromptFilter
from bot.scheduler import Scheduler
from bot.services import Services
from bot.services.about import AboutService
from bot.services.accounts import AccountService
from bot.services.admin import AdminService, load_admin_settings
from bot.services.alchemy import AlchemyService
from bot.services.chat import ChatService
from bot.services.generation import GenerationService
from bot.services.generation_options import RequestBuilder
from bot.services.guild_config import GuildConfigService
from bot.services.images import ImageWorker
from bot.services.info import InfoService
from bot.services.jobs.replies import ReplyTokens
from bot.services.kudos import KudosService
from bot.services.leases import LeaseKeeper
from bot.services.loras import LoraService
from bot.services.model_catalog import ModelCatalog
from bot.services.parties import PartyService
from bot.services.presets import PresetService
from bot.services.ratings import RatingsService, client_config, load_ratings_settings
from bot.services.retention import RetentionService
from bot.services.roles import RolesService
from bot.services.safety import SafetyService
from bot.services.sharedkeys import SharedKeyService
from bot.services.text import TextService
from bot.shards import ShardScope
from bot.ui.notifier import DiscordNotifier


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http: httpx.AsyncClient | None = None,
    seen_secrets: SeenSecrets | None = None,
) -> Runtime:
    """What the services are built from (tests inject their clock and HTTP client here, never by patching)."""
    clock = clock or SystemClock()
    http = http or build_http_client(settings.horde)
    if seen_secrets is not None:
        # Every key sent in a request header is scrubbed from the logs in any form (bot/logs.py).
        seen_secrets.attach(http)
    db = Database(
        settings.database.url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
    )
    # A paced request is on its way at most the HTTP client's timeouts (bot.horde.pacer: `landed`).
    pacer = Pacer(
        clock,
        settings.horde_pacer,
        flight_timeout=settings.horde.timeout + settings.horde.connect_timeout,
    )
    return Runtime(
        settings=settings,
        clock=clock,
        http=http,
        db=db,
        horde=HordeClient(http, settings.horde, clock, pacer),
        cipher=KeyCipher(settings.security.secret_key),
        users=UserRepository(db),
        guild_settings=GuildSettingsRepository(db),
        lease=Lease(process_holder(settings.database.process_id), float(settings.database.lease_seconds)),
    )


def build_services(runtime: Runtime) -> Services:
    settings, clock, http, db, horde = (
        runtime.settings,
        runtime.clock,
        runtime.http,
        runtime.db,
        runtime.horde,
    )
    cipher, users = runtime.cipher, runtime.users
    guild_config = GuildConfigService(runtime.guild_settings, clock)
    scheduler = Scheduler(clock)
    # Pillow's own threads, few (`[images] workers`): uploads converted, result grids (closed with the rest).
    images = ImageWorker(settings.images.workers)
    # Per-server background work runs only for the servers of this process's shards.
    shards = ShardScope(settings.discord.shard_count, settings.discord.shard_ids)
    accounts = AccountService(users, horde, cipher, clock)
    notifier = DiscordNotifier(guild_config)
    # Data lifecycle (issue #14): retention of every growing table, img2img sources (and the images of
    # alchemy jobs waiting to be sent) kept apart from job rows.
    retention_settings = settings.retention
    sources = SourceImageStore(db, max_bytes=retention_settings.img2img_sources_max_bytes)
    # Work the processes on one database share is leased (issue #17): each repository of it claims rows for
    # this process; the keeper renews the claims and hands a dead process's work to its kind's resume.
    lease = runtime.lease
    jobs = JobRepository(db, lease)
    generation_jobs = GenerationJobRepository(db, lease)
    gifts = KudosRepository(db, lease)
    ratings_repo = RatingsRepository(db, lease)
    leases = LeaseKeeper(
        lease,
        [
            jobs.leases,
            generation_jobs.leases,
            gifts.leases,
            ratings_repo.vote_leases,
            ratings_repo.generation_leases,
        ],
        [
            lambda now: jobs.unheld(("alchemy", "text"), now),
            generation_jobs.unheld,
            gifts.unheld,
            ratings_repo.unheld,
        ],
        scheduler,
        clock,
        # Shared PostgreSQL: each renewal compares this host's clock with the database's (a test's clock is
        # not the host's, nothing to compare).
        database_time=partial(database_time, db) if db.shared and clock.host_time else None,
        # SQLite refuses a second process (its file is locked): alone, the keeper runs only for the work
        # a dead predecessor left.
        alone=lambda: db.alone,
    )
    takeovers = leases.on_unheld
    # The interaction token of each job's command, stored encrypted with the job: whichever process delivers
    # it reads and edits the command's reply (a result shown there before a stop is not sent again).
    replies = ReplyTokens(cipher, clock)
    # Alchemy, text, /chat, information and shared keys (issue #8).
    tick = settings.scheduler.tick_seconds
    info = InfoService(horde, clock, settings.info)
    party_repo = PartyRepository(db)
    shared_keys = SharedKeyService(
        SharedKeyRepository(db), horde, cipher, accounts, guild_config, notifier, clock, parties=party_repo
    )
    alchemy = AlchemyService(
        jobs,
        horde,
        shared_keys,
        scheduler,
        clock,
        settings.alchemy,
        images,
        tick=tick,
        sources=sources,
        takeovers=takeovers,
        replies=replies,
    )
    safety = SafetyService(
        PromptFilter(),
        guild_config,
        notifier,
        clock,
        SafetyRepository(db),
        settings.safety,
        nsfw_classifier=alchemy.classify_nsfw,
    )
    alchemy.on_ip_timeout.subscribe(safety.note_ip_timeout)
    text_settings = settings.text
    text = TextService(
        jobs,
        horde,
        info,
        shared_keys,
        scheduler,
        clock,
        text_settings,
        tick=tick,
        safety=safety,
        takeovers=takeovers,
        replies=replies,
    )
    chat = ChatService(ChatRepository(db), text, info, clock, text_settings)
    text.before_deliver.subscribe(chat.record_answer)  # a /chat answer is recorded before it is shown
    ratings_settings = load_ratings_settings(settings)
    ratings = RatingsService(
        ratings_repo,
        RatingsClient(http, client_config(settings, ratings_settings), clock, horde),
        accounts,
        scheduler,
        clock,
        ratings_settings,
        shards=shards,
    )
    # Its retries run on the scheduler whatever the cogs do: it takes a dead process's over for the bot's
    # life.
    takeovers.subscribe(ratings.resume)
    admin = AdminService(guild_config, info, load_admin_settings(settings))
    generation_defaults = settings.generation
    model_catalog = ModelCatalog(
        horde, scheduler, clock, generation_defaults, settings.horde.model_reference_url
    )
    # LoRA suggestions and checks: CivitAI's API and the Horde's curated list, on the shared HTTP client.
    loras = LoraService(
        CivitaiClient(http, settings.civitai, settings.horde.lora_reference_url),
        scheduler,
        clock,
        settings.civitai,
    )
    request_builder = RequestBuilder(
        model_catalog, guild_config, generation_defaults, horde=horde, images=images, loras=loras
    )
    presets = PresetService(PresetRepository(db), request_builder, clock)
    # Automated roles (issue #6).
    roles = RolesService(
        RolesRepository(db, shards.key),  # each shard set walks its own servers' members
        users,
        accounts,
        horde,
        guild_config,
        notifier,
        scheduler,
        clock,
        settings.roles,
        shards=shards,
    )
    accounts.on_linked.subscribe(roles.on_linked)
    retention = RetentionService(RetentionRepository(db), sources, scheduler, clock, retention_settings)
    # Image generation jobs (issue #3).
    generation = GenerationService(
        generation_jobs,
        horde,
        request_builder,
        shared_keys,
        safety,
        guild_config,
        ratings,
        scheduler,
        clock,
        settings.generation_jobs,
        images,
        tick=tick,
        sources=sources,
        source_days=retention_settings.img2img_sources,
        takeovers=takeovers,
        replies=replies,
    )
    # Jobs accepted before the Horde timed out the bot's IP are not sent into the pause from their line.
    for engine in (alchemy.engine, text.engine, generation.engine):
        engine.horde_pause.plug(safety.check_before_sending)
    # Kudos gifting and generation parties (issue #5).
    kudos = KudosService(
        gifts,
        accounts,
        horde,
        guild_config,
        notifier,
        scheduler,
        clock,
        settings.kudos,
        takeovers=takeovers,
    )
    accounts.on_linked.subscribe(kudos.on_linked)
    parties = PartyService(
        party_repo,
        kudos,
        accounts,
        scheduler,
        clock,
        kudos.settings,
        model_catalog,
        shards=shards,
        keys=shared_keys,
    )
    # A reaction on the bot's generation result gifts to the member who asked for it; parties award on
    # every delivered generation.
    kudos.message_owners.subscribe(generation.requester_of_message)
    generation.on_completed.subscribe(parties.on_generation)
    # /logout: the key goes first (`AccountService.unlink`), then each of these, guarded; every repository
    # that stores a member id is reached here or declares why it keeps it (bot/db/member_data.py).
    accounts.forget("your managed roles", roles.forget_member)
    accounts.forget("your image generations", generation.forget_member)
    accounts.forget("your img2img source images", sources.forget_member)
    accounts.forget("your alchemy jobs in flight", alchemy.forget_member)
    accounts.forget("your text jobs in flight", text.forget_member)
    accounts.forget("your alchemy and text jobs", jobs.forget_member)
    accounts.forget("your /chat conversations", chat.forget_member)
    accounts.forget("your shared keys", shared_keys.forget_member)
    accounts.forget("your ratings", ratings.forget_member)
    accounts.forget("your presets", presets.forget_member)
    accounts.forget("your generation parties", parties.forget_member)
    accounts.forget("your kudos notices", kudos.forget_member)
    accounts.forget("your request count", safety.forget_member)
    return Services(
        runtime=runtime,
        clock=clock,
        scheduler=scheduler,
        accounts=accounts,
        guild_config=guild_config,
        notifier=notifier,
        info=info,
        shared_keys=shared_keys,
        alchemy=alchemy,
        text=text,
        chat=chat,
        ratings=ratings,
        safety=safety,
        admin=admin,
        model_catalog=model_catalog,
        request_builder=request_builder,
        roles=roles,
        generation=generation,
        kudos=kudos,
        parties=parties,
        retention=retention,
        presets=presets,
        loras=loras,
        images=images,
        leases=leases,
        about=AboutService(
            users,
            clock,
            settings.horde.api_url,
            [
                lambda: len(generation.poller.tracked),
                lambda: len(alchemy.poller.tracked),
                lambda: len(text.poller.tracked),
            ],
            settings.retention,
        ),
    )


def create_bot(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http: httpx.AsyncClient | None = None,
    cogs: list[str] | None = None,
    seen_secrets: SeenSecrets | None = None,
) -> HordeBot:
    runtime = build_runtime(settings, clock=clock, http=http, seen_secrets=seen_secrets)
    services = build_services(runtime)
    # Always sharded: without sharding settings, as many shards as Discord recommends (one for a small bot),
    # so a bot that grows past 2,500 servers keeps connecting without a new setting.
    return ShardedHordeBot(services, runtime, cogs=cogs)


def apply_discord_endpoints(settings: Settings) -> None:
    """Point discord.py at a Discord-compatible server (self-hosted or a test double).

    discord.py reads these as class attributes, so this is process-wide: call it from the entry point only.
    """
    if settings.discord.api_base_url:
        discord.http.Route.BASE = settings.discord.api_base_url
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


def freeze_startup_heap() -> None:
    """Take what start-up built out of the garbage collector's rounds (process-wide: entry points only).

    Every imported module and the wired services live as long as the process (~175,000 objects in
    bench/generation.py), yet each full collection walks them all: ~100 ms of CPU holding the GIL, so the
    event loop stood still that long several times a minute under load (issue #13, `loop_stall_max_ms`).
    Frozen, a full collection walks only what was made since (~15,000 objects there, a few ms). Garbage is
    collected first, so none of it is frozen for good."""
    gc.collect()
    gc.freeze()
