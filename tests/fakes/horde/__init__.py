"""A fake AI Horde REST server for behaviour tests and benchmarks.

It speaks the real wire protocol (``tests/data/horde/API_NOTES.md``): the same paths under ``/api/v2``, the
same JSON shapes and field names, the four error shapes, the limiter's 429s and headers. It runs an aiohttp
app on 127.0.0.1 in its **own thread with its own event loop**, so the test loop never sees its tasks and
its timing does not depend on the test loop's (possibly virtual) clock. All public methods are thread-safe.

Python API (``from tests.fakes.horde import FakeHorde``)::

    horde = FakeHorde(enforce_rate_limits=True, clock=time.monotonic, horde_limiter=True)
    # horde_limiter=True (the default): the real server's fixed windows (429 with Retry-After 0 inside the
    # second, 2 POSTs a second per IP and per key on the async endpoints); False: older moving windows
    base = horde.start()                      # "http://127.0.0.1:PORT/api"; also `with FakeHorde() as horde:`
    horde.stop()

    # accounts
    horde.anon                                # FakeUser id 0, key "0000000000", kudos 0, concurrency 500
    alice = horde.add_user("alice", apikey=None, kudos=100.0, trusted=False, worker_count=0, *, id=None,
                           concurrency=30, moderator=False, flagged=False, suspicious=False, education=False,
                           service=False, customizer=False, deleted=False, pseudonymous=False, ...)
    alice.id, alice.apikey, alice.kudos, alice.username  # "alice#1"
    horde.user(user_id); horde.set_kudos(user, kudos); horde.revoke_key(apikey)
    key = horde.add_shared_key(owner, "name", kudos=5000, expiry_days=-1, max_image_pixels=-1,
                               max_image_steps=-1, max_text_tokens=-1)   # key.id works as an apikey

    # catalogue
    horde.add_worker(name, models=[...], type="image"|"text"|"interrogation", *, owner=None, trusted=False,
                     online=True, threads=1, max_pixels=4194304, nsfw=True, speed=1e6, team=None, forms=None,
                     max_length=512, max_context_length=2048, ...) -> FakeWorker
    horde.remove_worker(w); horde.set_worker_online(w, online)
    horde.add_team(name, info="", creator="db0#1") -> FakeTeam
    horde.add_style(name, *, prompt="{p}{np}", params=None, models=None, creator="db0#1", tags=None, ...)
    horde.news (list, editable); horde.maintenance_mode = True; horde.stats_img_totals / stats_text_totals
    horde.model_reference = {name: entry, ...}   # served at horde.model_reference_url (None: 404)
    horde.lora_reference = [civitai_id, ...]     # the curated LoRA list, at horde.lora_reference_url

    # requests and worker progress (image and text share most of it)
    horde.jobs / horde.text_jobs / horde.interrogations    # live requests, oldest first
    horde.get_request(req_id); horde.last_request("image"|"text"|"interrogation"); horde.job(gen_id)
    horde.image_request(req_id); horde.text_request(req_id); horde.interrogation(req_id)   # typed lookups
    horde.start_processing(req_id, count=None, *, worker_name=None, model=None) -> [gen ids]
    horde.finish(req_id, images=None, *, count=None, censored=False, csam=False, state="ok",
                 worker_name=None, model=None, seed=None, gen_metadata=None) -> [gen ids]
    horde.finish_text(req_id, texts=None, *, count=None, worker_name=None, model=None, state="ok", csam=False)
    horde.fault(req_id, *, worker_name=None) -> gen id   # 1st fault re-queues; after the 2nd the slot is lost
    horde.cancel(req_id)                      # like DELETE .../status/{id}
    horde.expire(req_id)                      # deleted: check/status -> 404 RequestNotFound
    horde.set_queue(req_id, position, wait_time=None); horde.set_impossible(req_id, True)
    horde.break_image(gen_id)                 # its R2 URL 404s; r2=false status gives "N/A"
    horde.shared_request_ids = {req_id, ...}  # image status says "shared": true for these (default: none)
    horde.start_form(req_id, form=None); horde.finish_form(req_id, form=None, result=None, *, image=None)
    horde.expire_form(req_id, form); horde.fault_form(req_id, form)
    horde.autopilot(start_after=1, finish_after=2)   # progress on the Nth poll; autopilot(None, None) = off
    horde.autopilot_form_results["nsfw"] = {"nsfw": True}   # what autopilot workers answer for a form

    # faults, time, observation
    horde.inject(path_regex, *, method=None, status=None, body=None, headers=None, times=1, delay=0.0,
                 malformed=False, retry_after=None, rc=None, drop=False) -> Injection
    horde.clear_injections(); horde.release_delays(); horde.set_down(True)
    horde.enforce_rate_limits = False; horde.horde_limiter = True; horde.reset_rate_limits()
    horde.clock (default time.monotonic); horde.advance(seconds); horde.now(); horde.wall()
    horde.calls -> [Call]  # unpacks (method, path, status, headers, json); .user_id .client_agent .response
    horde.count(method_or_None, path_regex); horde.calls_to(path_regex, method=None); horde.clear_calls()
    horde.server_errors                       # tracebacks of bugs in the fake itself (should stay empty)

R2: with ``r2`` true (default) status ``img`` is ``{origin}/r2/<gen-id>.webp?...&Expires=...`` served by the
fake (valid 1800 s of fake time); with ``r2: false`` it is base64 WebP. Requests expire 20 min (fake time)
after creation or last pickup (``horde.auto_expire = False`` turns that off).
"""

from tests.fakes.horde.records import (
    Call,
    FakeSharedKey,
    FakeTeam,
    FakeUser,
    FakeWorker,
    ImageRequest,
    Injection,
    InterrogationForm,
    InterrogationRequest,
    Job,
    TextRequest,
)
from tests.fakes.horde.server import BANNED_CLIENT_AGENT, FakeHorde

__all__ = [
    "BANNED_CLIENT_AGENT",
    "Call",
    "FakeHorde",
    "FakeSharedKey",
    "FakeTeam",
    "FakeUser",
    "FakeWorker",
    "ImageRequest",
    "Injection",
    "InterrogationForm",
    "InterrogationRequest",
    "Job",
    "TextRequest",
]
