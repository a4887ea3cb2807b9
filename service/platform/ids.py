"""Ids of the service's objects: a prefix and 24 hex digits that sort in the order the objects were made.

OpenAI's lists are in creation order. Ours order by `created_at` (seconds, as OpenAI's objects carry it),
then by id, so objects made within one second listed in the order of random ids: three files uploaded by
a script came back shuffled. The first 13 digits here are the creation time in microseconds, the other 11
random (44 bits), so a later id sorts after an earlier one.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}{time.time_ns() // 1000:013x}{secrets.randbits(44):011x}"
