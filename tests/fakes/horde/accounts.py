"""Users, kudos transfers and shared keys (API_NOTES §7, §9; upstream database/functions.py)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from tests.fakes.horde import errors as err
from tests.fakes.horde.alchemy import AlchemyMixin
from tests.fakes.horde.core import ApiRequest, ApiResponse, ok
from tests.fakes.horde.records import FakeSharedKey, FakeUser
from tests.fakes.horde.schema import SHAREDKEY_INPUT, TRANSFER_INPUT

TRANSFER_COOLDOWN = 60.0
DEFAULT_TRANSFER_AMOUNT = 100


@dataclass
class _Transfer:
    dest_id: int
    amount: int
    response: dict[str, Any]


def _validation(field_name: str, message: str) -> err.HordeHTTPError:
    return err.validation_error({field_name: message})


class AccountsMixin(AlchemyMixin):
    # ---- direct API ----------------------------------------------------------------------------------
    def add_user(
        self,
        username: str,
        apikey: str | None = None,
        kudos: float = 100.0,
        trusted: bool = False,
        worker_count: int = 0,
        *,
        id: int | None = None,
        concurrency: int = 30,
        moderator: bool = False,
        flagged: bool = False,
        suspicious: bool = False,
        education: bool = False,
        service: bool = False,
        customizer: bool = False,
        deleted: bool = False,
        pseudonymous: bool = False,
        public_workers: bool = False,
        account_age: float = 86400.0,
    ) -> FakeUser:
        """Register an account; ``username`` is the alias (the unique name is ``alias#id``).

        ``apikey`` defaults to a random 22-character key. Ids count up from 1 unless given.
        """
        with self.lock:
            if id is None:
                while self._next_user_id in self.users:
                    self._next_user_id += 1
                id = self._next_user_id
            if id in self.users:
                raise ValueError(f"user id {id} already exists")
            key = apikey if apikey is not None else secrets.token_urlsafe(16)[:22]
            if key in self._keys:
                raise ValueError("that apikey is already in use")
            user = FakeUser(
                id=id,
                alias=username,
                apikey=key,
                kudos=float(kudos),
                trusted=trusted,
                worker_count=worker_count,
                concurrency=concurrency,
                moderator=moderator,
                flagged=flagged,
                suspicious=suspicious,
                education=education,
                service=service,
                customizer=customizer,
                deleted=deleted,
                pseudonymous=pseudonymous,
                public_workers=public_workers,
                created_at=self.now() - account_age,
            )
            self.users[id] = user
            self._keys[key] = id
            return user

    def user(self, user_id: int) -> FakeUser:
        with self.lock:
            return self.users[user_id]

    def revoke_key(self, apikey: str) -> None:
        """Make a key unknown (401 InvalidAPIKey / 404 on find_user); the account stays."""
        with self.lock:
            user_id = self._keys.pop(apikey, None)
            if user_id is not None and self.users[user_id].apikey == apikey:
                self.users[user_id].apikey = None
            self.shared_keys.pop(apikey, None)

    def set_kudos(self, user: FakeUser | int, kudos: float) -> None:
        with self.lock:
            target = self.users[user if isinstance(user, int) else user.id]
            target.kudos = float(kudos)

    def add_shared_key(
        self,
        owner: FakeUser | int,
        name: str = "test key",
        *,
        kudos: int = 5000,
        expiry_days: int = -1,
        max_image_pixels: int = -1,
        max_image_steps: int = -1,
        max_text_tokens: int = -1,
        utilized: int = 0,
    ) -> FakeSharedKey:
        """Create a shared key directly; its ``id`` is usable as an apikey."""
        with self.lock:
            owner_id = owner if isinstance(owner, int) else owner.id
            key = FakeSharedKey(
                id=self._new_id(),
                owner_id=owner_id,
                name=name,
                kudos=kudos,
                expiry_at=None if expiry_days == -1 else self.wall() + expiry_days * 86400,
                utilized=utilized,
                max_image_pixels=max_image_pixels,
                max_image_steps=max_image_steps,
                max_text_tokens=max_text_tokens,
            )
            self.shared_keys[key.id] = key
            return key

    # ---- GET /v2/find_user, GET /v2/users/{id} ------------------------------------------------------
    def _ep_find_user(self, req: ApiRequest) -> ApiResponse:
        if req.apikey is None:
            raise err.horde_error(401, "InvalidAPIKey", err.INVALID_API_KEY_MESSAGE)
        user, shared = self._resolve_key(req.apikey)
        if user is None:
            raise err.horde_error(404, "UserNotFound", "User with api_key '<redacted>' not found.")
        details = self._user_details(user, privileged=shared is None)
        if shared is not None:
            suffix = f": {shared.name}" if shared.name else ""
            details["username"] = f"{details['username']} (Shared Key{suffix})"
        return ok(details)

    def _ep_user(self, req: ApiRequest) -> ApiResponse:
        raw = req.params["id"]
        user = self.users.get(int(raw)) if raw.isdigit() else None
        if user is None:
            raise err.horde_error(404, "UserNotFound", f"User with ID '{raw}' not found.")
        return ok(self._user_details(user, privileged=False))

    # ---- POST /v2/kudos/transfer ---------------------------------------------------------------------
    def _transfer_error(self, rc: str, message: str) -> err.HordeHTTPError:
        return err.bad_request(rc, message)

    def _ep_kudos_transfer(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, TRANSFER_INPUT)
        if req.apikey is None:
            raise err.missing_apikey()
        if "username" not in body:
            raise _validation(
                "username", "The user to transfer Kudos to. Missing required parameter in the JSON body"
            )
        amount = int(body.get("amount", DEFAULT_TRANSFER_AMOUNT))
        source, _shared = self._resolve_key(req.apikey)
        if source is None or _shared is not None:
            raise err.invalid_api_key()
        if source.is_anon:
            raise self._transfer_error(
                "KudosTransferFromAnon", "You cannot transfer Kudos from Anonymous, smart-ass."
            )
        target_name = str(body["username"])
        dest_part = target_name.rsplit("#", 1)[-1]
        dest: FakeUser | None = self.users.get(int(dest_part)) if dest_part.isdigit() else None
        shared_target: FakeSharedKey | None = None
        if dest is None:
            shared_target = self.shared_keys.get(target_name)
            if shared_target is None:
                raise self._transfer_error("InvalidTargetUsername", "Invalid target username.")
            if shared_target.expiry_at is not None and self.wall() > shared_target.expiry_at:
                raise self._transfer_error("SharedKeyExpired", "This shared key has expired")
            dest = self.users.get(shared_target.owner_id)
            if dest is None:
                raise self._transfer_error("InvalidTargetUsername", "Invalid target username.")
        if dest.is_anon:
            raise self._transfer_error(
                "KudosTransferToAnon",
                "Tried to burn kudos via sending to Anonymous. Assuming PEBKAC and aborting.",
            )
        if dest.id == source.id:
            raise self._transfer_error("KudosTransferToSelf", "Cannot send kudos to yourself, ya monkey!")
        reverse_at = self._transfers_at.get((dest.id, source.id))
        if reverse_at is not None and self.now() - reverse_at < TRANSFER_COOLDOWN:
            raise self._transfer_error(
                "TooFastKudosTransfers",
                "This user transferred kudos to you very recently. Please wait at least 1 minute.",
            )
        checks = (
            (
                source.suspicious,
                "FaultWhenKudosSending",
                "Something went wrong when sending kudos. Please contact the mods.",
            ),
            (
                source.flagged,
                "SourceAccountFlagged",
                "The target account has been flagged for suspicious activity and tranferring kudos to them "
                "is blocked.",
            ),
            (source.education, "EducationCannotSendKudos", "Education accounts cannot transfer kudos away"),
            (
                dest.suspicious,
                "FaultWhenKudosReceiving",
                "Something went wrong when receiving kudos. Please contact the mods.",
            ),
            (
                dest.flagged,
                "TargetAccountFlagged",
                "Your account has been flagged for suspicious activity. Please contact the mods.",
            ),
            (
                dest.deleted,
                "DeletedUser",
                "This destination account has been scheduled for deletion and is disabled",
            ),
            (
                source.deleted,
                "DeletedUser",
                "This source account has been scheduled for deletion and is disabled",
            ),
            (amount < 0, "NegativeKudosTransfer", "Nice try..."),
            (amount == 0, "InvalidKudosTransferAmount", "Transfer amount must be positive."),
        )
        for failed, rc, message in checks:
            if failed:
                raise self._transfer_error(rc, message)
        idempotency_key = req.headers.get("idempotency-key")
        if idempotency_key:
            prior = self._idempotent.get((source.id, idempotency_key))
            if prior is not None:
                if prior.dest_id != dest.id or prior.amount != amount:
                    raise self._transfer_error(
                        "IdempotencyKeyConflict",
                        "Idempotency key was already used with different transfer parameters.",
                    )
                return ok(dict(prior.response))
        if amount > source.kudos:
            raise self._transfer_error("KudosTransferNotEnough", "Not enough kudos.")
        source.kudos -= amount
        dest.kudos += amount
        source.kudos_details["donated" if dest.education else "gifted"] += amount
        dest.kudos_details["received"] += amount
        if shared_target is not None and shared_target.kudos != -1:
            shared_target.kudos += amount
        self._transfers_at[(source.id, dest.id)] = self.now()
        response = {"transferred": float(amount)}
        if idempotency_key:
            self._idempotent[(source.id, idempotency_key)] = _Transfer(dest.id, amount, response)
        return ok(dict(response))

    # ---- shared keys ---------------------------------------------------------------------------------
    def _ep_sharedkey_put(self, req: ApiRequest) -> ApiResponse:
        body = self._body(req, SHAREDKEY_INPUT)
        user, shared = self._auth(req, allow_shared=False)
        del shared
        if user.is_anon:
            raise err.horde_error(
                403, "AnonForbidden", "Anonymous user is forbidden from performing this operation"
            )
        key = self.add_shared_key(
            user,
            body.get("name") or "",
            kudos=int(body.get("kudos", 5000)),
            expiry_days=int(body.get("expiry", -1)),
            max_image_pixels=int(body.get("max_image_pixels", -1)),
            max_image_steps=int(body.get("max_image_steps", -1)),
            max_text_tokens=int(body.get("max_text_tokens", -1)),
        )
        return ok(self._shared_key_details(key))

    def _shared_key_or_404(self, key_id: str) -> FakeSharedKey:
        key = self.shared_keys.get(key_id)
        if key is None:
            raise err.horde_error(404, "SharedKeyInvalid", f"Shared Key with ID '{key_id}' not found.")
        return key

    def _ep_sharedkey(self, req: ApiRequest) -> ApiResponse:
        key_id = req.params["id"]
        if req.method == "GET":
            return ok(self._shared_key_details(self._shared_key_or_404(key_id)))
        body = self._body(req, SHAREDKEY_INPUT) if req.method == "PATCH" else {}
        user, _shared = self._auth(req, allow_shared=False)
        key = self._shared_key_or_404(key_id)
        if key.owner_id != user.id and not user.moderator:
            raise err.horde_error(403, "NotOwner", "You're not the owner of this shared key.")
        if req.method == "DELETE":
            del self.shared_keys[key.id]
            return ok({"message": "OK"})
        if not body:
            raise err.bad_request("NoSharedKeyModSelected", "No shared key modification selected!")
        if "name" in body:
            key.name = body["name"]
        if "kudos" in body:
            key.kudos = int(body["kudos"])
        if "expiry" in body:
            key.expiry_at = None if body["expiry"] == -1 else self.wall() + int(body["expiry"]) * 86400
        for limit in ("max_image_pixels", "max_image_steps", "max_text_tokens"):
            if limit in body:
                setattr(key, limit, int(body[limit]))
        return ok(self._shared_key_details(key))
