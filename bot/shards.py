"""Which servers this process looks after when the bot runs as several processes (sharding).

Discord assigns a server to shard `(guild_id >> 22) % shard_count`; a process connects only some shards
(`discord.shard_ids`) and so only sees their servers. Per-server background work (party ends, rating
parties, role sync, log posts) runs only in the process whose shards hold the server, so two processes
never post the same notice or end the same party twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's shard formula for a server id."""
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True)
class ShardScope:
    """The shards this process runs: `count` None (or no `ids`) means every server is this process's."""

    count: int | None = None
    ids: tuple[int, ...] = ()

    @property
    def everything(self) -> bool:
        return self.count is None or not self.ids or len(set(self.ids)) == self.count

    @property
    def key(self) -> str:
        """A name for this shard set, the same in every process running it ("all": every shard): what a
        process keeps of its own per-server walk (the role sync's cursor) is stored under it."""
        if self.everything:
            return "all"
        key = f"{self.count}:{','.join(str(i) for i in sorted(set(self.ids)))}"
        # Stored in 64 characters: a long list of shards is named by its digest.
        return key if len(key) <= 64 else f"{self.count}:" + hashlib.sha256(key.encode()).hexdigest()[:40]

    def owns(self, guild_id: int | None) -> bool:
        """True if the server's shard is one of this process's. Work without a server (DMs) stays with the
        process that holds shard 0, as Discord delivers DMs there."""
        if self.everything:
            return True
        assert self.count is not None
        return shard_of(guild_id or 0, self.count) in self.ids


ALL_SHARDS = ShardScope()  # one process with every shard (the default)
