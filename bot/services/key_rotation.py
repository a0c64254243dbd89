"""`python run.py rotate-keys`: re-encrypt every stored key and shared key with the newest secret key.

Resumable by design: a value already encrypted with the newest key is skipped, so a run stopped halfway (or
a second run) carries on where the work is left. Values no key can read are counted and named by row, never
changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bot.crypto import KeyCipher, KeyDecryptionError
from bot.db.key_rotation import ENCRYPTED, KeyRotationRepository

log = logging.getLogger(__name__)


@dataclass
class RotationReport:
    rotated: int = 0
    current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[str] = field(default_factory=list)  # "table.column #id"

    def summary(self) -> str:
        text = (
            f"rotate-keys: {self.rotated} re-encrypted with the newest key, {self.current} already were"
            + (f", {self.changed_meanwhile} changed meanwhile (run again)" if self.changed_meanwhile else "")
        )
        if self.unreadable:
            shown = ", ".join(self.unreadable[:20])
            text += (
                f"; {len(self.unreadable)} could not be read with any key in HORDEBOT_SECRET_KEY "
                f"(left unchanged: {shown})"
            )
        return text


async def rotate_keys(repo: KeyRotationRepository, cipher: KeyCipher, *, batch: int = 200) -> RotationReport:
    report = RotationReport()
    for column in ENCRYPTED:
        after = None
        while True:
            rows = await repo.page(column, after, batch)
            if not rows:
                break
            for key, token in rows:
                if cipher.is_current(token):
                    report.current += 1
                    continue
                try:
                    fresh = cipher.rotate(token)
                except KeyDecryptionError:
                    report.unreadable.append(f"{column.name} #{key}")
                    continue
                if await repo.replace(column, key, token, fresh):
                    report.rotated += 1
                else:
                    report.changed_meanwhile += 1
            after = rows[-1][0]
    log.info("%s", report.summary())
    return report
