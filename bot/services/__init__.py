"""Services: the bot's rules, as plain async classes testable without Discord."""

from __future__ import annotations

from dataclasses import InitVar, dataclass

from bot.clock import Clock
from bot.notify import Notifier
from bot.runtime import Runtime
from bot.scheduler import Scheduler
from bot.services.about import AboutService
from bot.services.accounts import AccountService
from bot.services.admin import AdminService
from bot.services.alchemy import AlchemyService
from bot.services.chat import ChatService
from bot.services.generation import GenerationService
from bot.services.generation_options import RequestBuilder
from bot.services.guild_config import GuildConfigService
from bot.services.images import ImageWorker
from bot.services.info import InfoService
from bot.services.kudos import KudosService
from bot.services.leases import LeaseKeeper
from bot.services.loras import LoraService
from bot.services.model_catalog import ModelCatalog
from bot.services.parties import PartyService
from bot.services.presets import PresetService
from bot.services.ratings import RatingsService
from bot.services.retention import RetentionService
from bot.services.roles import RolesService
from bot.services.safety import SafetyService
from bot.services.sharedkeys import SharedKeyService
from bot.services.text import TextService


@dataclass
class Services:
    """Everything cogs need, built once by `bot.app.build_services` and injected: services only. The
    database, the HTTP client, repositories and settings stay in the `Runtime` they were built from."""

    runtime: InitVar[Runtime]
    clock: Clock
    scheduler: Scheduler
    accounts: AccountService
    guild_config: GuildConfigService
    notifier: Notifier
    info: InfoService
    shared_keys: SharedKeyService
    alchemy: AlchemyService
    text: TextService
    chat: ChatService
    ratings: RatingsService
    safety: SafetyService
    admin: AdminService
    # /generate options: model/style catalog (call `model_catalog.start()` from the cog) and request building.
    model_catalog: ModelCatalog
    request_builder: RequestBuilder
    roles: RolesService
    # /generate jobs (issue #3): `generation.on_completed` and `generation.requester_of_message` for others.
    generation: GenerationService
    # Kudos gifting (reactions, /transfer) and generation parties (issue #5).
    kudos: KudosService
    parties: PartyService
    # Data lifecycle (issue #14): the scheduled retention prune.
    retention: RetentionService
    # Generation presets (/preset, `preset` on /generate) (issue #16).
    presets: PresetService
    # /about's figures (issue #16).
    about: AboutService
    # LoRA suggestions and checks (CivitAI and the Horde's curated list) (issue #16).
    loras: LoraService
    # Pillow's threads (uploads converted, result grids), shut down on close.
    images: ImageWorker
    # This process's claims on shared work: renewed, and a dead process's work taken over (issue #17).
    leases: LeaseKeeper

    def __post_init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def start(self) -> None:
        """Async start-up work (never at import or construction time). Safe to call twice."""
        await self._runtime.start()
        # Compile the safety word lists now, not on the first member's prompt.
        self.safety.warm_up()
        # Running cooldowns and the IP pause into memory: the command gate then never reads the database.
        await self.safety.load()
        self.retention.start()
        await self.leases.start()

    async def close(self) -> None:
        self.leases.stop()
        await self.scheduler.close()
        # Nothing of this process runs any more: its claims go back at once, for the other processes.
        if self._runtime.db.connected:
            await self.leases.release()
        await self._runtime.close()
        self.images.close()
