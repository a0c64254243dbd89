"""Read-mostly endpoints: workers, teams, models, styles, news, status and stats (API_NOTES §8, §10)."""

from __future__ import annotations

from typing import Any, Literal

from tests.fakes.horde import errors as err
from tests.fakes.horde.accounts import AccountsMixin
from tests.fakes.horde.core import HORDE_VERSION, ApiRequest, ApiResponse, ok
from tests.fakes.horde.records import FakeTeam, FakeUser, FakeWorker, GenRequest, InterrogationRequest

STYLES_PER_PAGE = 25
WorkerType = Literal["image", "text", "interrogation"]


class CatalogMixin(AccountsMixin):
    # ---- direct API ----------------------------------------------------------------------------------
    def add_worker(
        self,
        name: str,
        models: list[str] | None = None,
        type: WorkerType = "image",
        *,
        owner: FakeUser | int | None = None,
        trusted: bool = False,
        online: bool = True,
        threads: int = 1,
        max_pixels: int = 4194304,
        nsfw: bool = True,
        speed: float = 1_000_000.0,
        team: FakeTeam | str | None = None,
        forms: list[str] | None = None,
        max_length: int = 512,
        max_context_length: int = 2048,
        maintenance_mode: bool = False,
        info: str | None = None,
        worker_id: str | None = None,
    ) -> FakeWorker:
        """Register a worker; online workers make their models show in /status/models."""
        with self.lock:
            owner_id = owner if isinstance(owner, int) or owner is None else owner.id
            team_id = team.id if isinstance(team, FakeTeam) else team
            worker = FakeWorker(
                id=worker_id or self._new_id(),
                name=name,
                type=type,
                models=list(models or []),
                forms=list(
                    forms or ([] if type != "interrogation" else ["caption", "interrogation", "nsfw"])
                ),
                owner_id=owner_id,
                trusted=trusted,
                online=online,
                threads=threads,
                max_pixels=max_pixels,
                nsfw=nsfw,
                speed=speed,
                team_id=team_id,
                max_length=max_length,
                max_context_length=max_context_length,
                maintenance_mode=maintenance_mode,
                info=info,
            )
            self.workers[worker.id] = worker
            if owner_id is not None and owner_id in self.users:
                self.users[owner_id].worker_ids.append(worker.id)
                self.users[owner_id].worker_count += 1
            return worker

    def remove_worker(self, worker: FakeWorker | str) -> None:
        with self.lock:
            worker_id = worker.id if isinstance(worker, FakeWorker) else worker
            self.workers.pop(worker_id, None)

    def set_worker_online(self, worker: FakeWorker | str, online: bool = True) -> None:
        with self.lock:
            target = self.workers[worker.id if isinstance(worker, FakeWorker) else worker]
            target.online = online

    def add_team(self, name: str, info: str = "", creator: str = "db0#1") -> FakeTeam:
        with self.lock:
            team = FakeTeam(id=self._new_id(), name=name, info=info, creator=creator)
            self.teams[team.id] = team
            return team

    def add_style(
        self,
        name: str,
        *,
        prompt: str = "{p}{np}",
        params: dict[str, Any] | None = None,
        models: list[str] | None = None,
        creator: str = "db0#1",
        tags: list[str] | None = None,
        nsfw: bool = False,
        public: bool = True,
        info: str | None = None,
        use_count: int = 0,
    ) -> dict[str, Any]:
        """Add an image style (``StyleStable`` shape); generate/async accepts its id or name."""
        with self.lock:
            style: dict[str, Any] = {
                "id": self._new_id(),
                "name": name,
                "info": info or f"The {name} style.",
                "prompt": prompt,
                "params": dict(params or {}),
                "public": public,
                "nsfw": nsfw,
                "tags": list(tags or []),
                "models": list(models or ["stable_diffusion"]),
                "creator": creator,
                "use_count": use_count,
                "examples": [],
                "_created": self.now(),
            }
            self.styles[style["id"]] = style
            return style

    # ---- serialisers ---------------------------------------------------------------------------------
    def _worker_details(self, worker: FakeWorker) -> dict[str, Any]:
        team = self.teams.get(worker.team_id or "")
        details: dict[str, Any] = {
            "type": worker.type,
            "name": worker.name,
            "id": worker.id,
            "online": worker.online,
            "requests_fulfilled": worker.requests_fulfilled,
            "kudos_rewards": round(worker.kudos_rewards, 2),
            # No uptime reward yet is null, not 0 (transcripts 65-67).
            "kudos_details": {
                "generated": round(worker.kudos_rewards, 2),
                "uptime": round(worker.uptime_kudos, 2) if worker.uptime_kudos else None,
            },
            "performance": (
                f"{worker.speed / 1e6:.1f} megapixelsteps per second"
                if worker.type == "image"
                else f"{worker.speed:.1f} tokens per second"
            ),
            "threads": worker.threads,
            "uptime": worker.uptime,
            "maintenance_mode": worker.maintenance_mode,
            "nsfw": worker.nsfw,
            "trusted": worker.trusted,
            "flagged": worker.flagged,
            "uncompleted_jobs": worker.uncompleted_jobs,
            "models": list(worker.models),
            # Without a team both are null, not absent (transcripts 65-67).
            "team": {"name": team.name, "id": team.id} if team else {"name": None, "id": None},
            "bridge_agent": worker.bridge_agent,
            "max_pixels": worker.max_pixels,
            "megapixelsteps_generated": worker.megapixelsteps_generated,
            "img2img": worker.img2img,
            "painting": worker.painting,
            "post-processing": worker.post_processing,
            "lora": worker.lora,
            "controlnet": worker.controlnet,
            "sdxl_controlnet": worker.sdxl_controlnet,
        }
        if worker.type == "interrogation":
            details["forms"] = list(worker.forms)
        if worker.info is not None:
            details["info"] = worker.info
        if worker.type == "text":
            details["max_length"] = worker.max_length
            details["max_context_length"] = worker.max_context_length
            details["tokens_generated"] = worker.tokens_generated
        return details

    def _style_details(self, style: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in style.items() if not k.startswith("_")}

    def _models(self, kind: str) -> list[dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        for worker in self.workers.values():
            if worker.type != kind or not worker.online:
                continue
            for name in worker.models:
                entry = stats.setdefault(
                    name,
                    {
                        "name": name,
                        "count": 0,
                        "performance": 0.0,
                        "queued": 0.0,
                        "jobs": 0.0,
                        "eta": 0,
                        "type": kind,
                    },
                )
                entry["count"] += worker.threads
                entry["performance"] += worker.speed * worker.threads
        for entry in stats.values():
            entry["performance"] = round(entry["performance"] / max(entry["count"], 1), 1)
        for request in self._requests.values():
            if not isinstance(request, GenRequest) or request.kind != kind or request.done:
                continue
            names = [name for name in request.models if name in stats] or (
                [next(iter(stats))] if stats else []
            )
            for name in names[:1]:
                pending = request.waiting + request.processing
                stats[name]["jobs"] += pending
                if kind == "image":
                    pixels = int(request.params.get("width", 512)) * int(request.params.get("height", 512))
                    stats[name]["queued"] += pixels * int(request.params.get("steps", 30)) * pending
                else:
                    stats[name]["queued"] += int(request.params.get("max_length", 80)) * pending
        for entry in stats.values():
            power = entry["count"] * entry["performance"]
            entry["eta"] = int(entry["queued"] / power) if power > 0 else 10000
        return list(stats.values())

    # ---- workers & teams -----------------------------------------------------------------------------
    def _ep_workers(self, req: ApiRequest) -> ApiResponse:
        kind = req.query.get("type")
        name = req.query.get("name")
        workers = [
            self._worker_details(w)
            for w in self.workers.values()
            if (kind is None or w.type == kind) and (name is None or w.name.lower() == name.lower())
        ]
        return ok(workers)

    def _ep_worker(self, req: ApiRequest) -> ApiResponse:
        worker = self.workers.get(req.params["id"])
        if worker is None:
            raise err.horde_error(404, "WorkerNotFound", f"Worker with ID '{req.params['id']}' not found.")
        return ok(self._worker_details(worker))

    def _ep_worker_by_name(self, req: ApiRequest) -> ApiResponse:
        wanted = req.params["name"]
        for worker in self.workers.values():
            if worker.name.lower() == wanted.lower():
                return ok(self._worker_details(worker))
        raise err.horde_error(404, "WorkerNotFound", f"Worker with ID '{wanted}' not found.")

    def _team_details(self, team: FakeTeam) -> dict[str, Any]:
        members = [w for w in self.workers.values() if w.team_id == team.id]
        models: dict[str, int] = {}
        for worker in members:
            for model in worker.models:
                models[model] = models.get(model, 0) + 1
        return {
            "name": team.name,
            "id": team.id,
            "info": team.info,
            "requests_fulfilled": sum(w.requests_fulfilled for w in members),
            "kudos": round(sum(w.kudos_rewards for w in members), 2),
            "uptime": sum(w.uptime for w in members),
            "creator": team.creator,
            "worker_count": len(members),
            "workers": [{"type": w.type, "name": w.name, "id": w.id, "online": w.online} for w in members],
            "models": [{"name": name, "count": count} for name, count in models.items()],
        }

    def _ep_teams(self, req: ApiRequest) -> ApiResponse:
        return ok([self._team_details(team) for team in self.teams.values()])

    def _ep_team(self, req: ApiRequest) -> ApiResponse:
        team = self.teams.get(req.params["id"])
        if team is None:
            raise err.horde_error(404, "TeamNotFound", f"Team with ID '{req.params['id']}' not found.")
        return ok(self._team_details(team))

    # ---- models --------------------------------------------------------------------------------------
    def _ep_models(self, req: ApiRequest) -> ApiResponse:
        kind = req.query.get("type", "image")
        state = req.query.get("model_state", "all")
        if state not in ("known", "custom", "all"):
            raise err.bad_request("BadRequest", "'model_state' needs to be one of ['known', 'custom', 'all']")
        models = self._models(kind)
        for bound in ("min_count", "max_count"):
            raw = req.query.get(bound)
            if raw is None:
                continue
            if not raw.lstrip("-").isdigit():
                raise err.validation_error({bound: f"invalid literal for int() with base 10: '{raw}'"})
            limit = int(raw)
            if bound == "min_count":
                models = [m for m in models if m["count"] >= limit]
            else:
                models = [m for m in models if m["count"] <= limit]
        return ok(models)

    def _ep_model(self, req: ApiRequest) -> ApiResponse:
        name = req.params["name"]
        found = [m for kind in ("image", "text") for m in self._models(kind) if m["name"] == name]
        return ok(found[:1])

    # ---- styles --------------------------------------------------------------------------------------
    def add_collection(self, name: str, styles: list[str], *, type: str = "image") -> dict[str, Any]:
        """A public collection of styles (by style name), as `GET /collections` returns it."""
        with self.lock:
            found = [s for s in self.styles.values() if s["name"] in styles]
            collection = {
                "id": self._new_id(),
                "name": name,
                "type": type,
                "public": True,
                "styles": [{"name": s["name"], "id": s["id"]} for s in found],
                "use_count": 0,
            }
            self.collections.append(collection)
            return collection

    def _ep_collections(self, req: ApiRequest) -> ApiResponse:
        wanted = req.query.get("type", "all")
        found = [c for c in self.collections if c["public"] and wanted in ("all", c["type"])]
        return ok(found)

    def _ep_styles(self, req: ApiRequest) -> ApiResponse:
        sort = req.query.get("sort", "popular")
        if sort not in ("popular", "age"):
            raise err.bad_request("BadRequest", "'sort' needs to be one of ['popular', 'age']")
        raw_page = req.query.get("page", "1")
        if not raw_page.isdigit() or int(raw_page) < 1:
            raise err.bad_request("BadRequest", "'page' needs to be a positive integer")
        styles = [s for s in self.styles.values() if s["public"]]
        if tag := req.query.get("tag"):
            styles = [s for s in styles if tag in s["tags"]]
        if model := req.query.get("model"):
            styles = [s for s in styles if model in s["models"]]
        if sort == "popular":
            styles.sort(key=lambda s: -s["use_count"])
        else:
            styles.sort(key=lambda s: -s["_created"])
        page = int(raw_page)
        chunk = styles[(page - 1) * STYLES_PER_PAGE : page * STYLES_PER_PAGE]
        return ok([self._style_details(s) for s in chunk])

    def _ep_style(self, req: ApiRequest) -> ApiResponse:
        style = self.styles.get(req.params["id"])
        if style is None:
            raise err.horde_error(404, "StyleNotFound", f"Style with ID '{req.params['id']}' not found.")
        return ok(self._style_details(style))

    def _ep_style_by_name(self, req: ApiRequest) -> ApiResponse:
        wanted = req.params["name"]
        for style in self.styles.values():
            if wanted in (style["name"], f"{style['creator']}::style::{style['name']}"):
                return ok(self._style_details(style))
        raise err.horde_error(404, "StyleNotFound", f"Style with ID '{wanted}' not found.")

    # ---- status & stats ------------------------------------------------------------------------------
    def _ep_news(self, req: ApiRequest) -> ApiResponse:
        return ok([dict(item) for item in self.news])

    def _ep_modes(self, req: ApiRequest) -> ApiResponse:
        return ok({"maintenance_mode": self.maintenance_mode, "invite_only_mode": self.invite_only_mode})

    def _ep_heartbeat(self, req: ApiRequest) -> ApiResponse:
        return ok(
            {
                "message": "OK",
                "version": HORDE_VERSION,
                "queue": sum(1 for r in self._requests.values() if not r.done),
                "threads": sum(w.threads for w in self.workers.values() if w.online),
                "active_count": sum(1 for w in self.workers.values() if w.online),
                "db_connection": True,
            }
        )

    def _ep_performance(self, req: ApiRequest) -> ApiResponse:
        self._sweep()
        online = [w for w in self.workers.values() if w.online]
        image_requests = [
            r for r in self._requests.values() if isinstance(r, GenRequest) and r.kind == "image"
        ]
        text_requests = [r for r in self._requests.values() if isinstance(r, GenRequest) and r.kind == "text"]
        queued_mps = 0.0
        for request in image_requests:
            pending = request.waiting + request.processing
            pixels = int(request.params.get("width", 512)) * int(request.params.get("height", 512))
            queued_mps += pixels * int(request.params.get("steps", 30)) * pending / 1e6
        return ok(
            {
                "queued_requests": sum(r.waiting + r.processing for r in image_requests),
                "queued_text_requests": sum(r.waiting + r.processing for r in text_requests),
                "worker_count": sum(1 for w in online if w.type == "image"),
                "text_worker_count": sum(1 for w in online if w.type == "text"),
                "thread_count": sum(w.threads for w in online if w.type == "image"),
                "text_thread_count": sum(w.threads for w in online if w.type == "text"),
                "queued_megapixelsteps": round(queued_mps, 2),
                "past_minute_megapixelsteps": 0.0,
                "queued_forms": float(
                    sum(
                        1
                        for r in self._requests.values()
                        if isinstance(r, InterrogationRequest)
                        for f in r.forms
                        if f.state in ("waiting", "processing")
                    )
                ),
                "interrogator_count": sum(1 for w in online if w.type == "interrogation"),
                "interrogator_thread_count": sum(w.threads for w in online if w.type == "interrogation"),
                "queued_tokens": float(
                    sum(
                        int(r.params.get("max_length", 80)) * (r.waiting + r.processing)
                        for r in text_requests
                    )
                ),
                "past_minute_tokens": 0.0,
            }
        )

    def _ep_stats_img(self, req: ApiRequest) -> ApiResponse:
        return ok({period: dict(values) for period, values in self.stats_img_totals.items()})

    def _ep_stats_text(self, req: ApiRequest) -> ApiResponse:
        return ok({period: dict(values) for period, values in self.stats_text_totals.items()})
