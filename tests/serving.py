"""Helpers of the tests that serve the app in-process: a free port, and requests as the page sends them (raw HTTP to
gradio's queue and to its unqueued route), which gradio_client cannot send (NaN, event data, a private handler)."""

import json
import socket
import uuid

import httpx


def free_port() -> int:
    """A localhost port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config(url: str) -> dict:
    return httpx.get(f"{url}/config").json()


def component_id(url: str, elem_id: str) -> int:
    return next(c["id"] for c in config(url)["components"] if c.get("props", {}).get("elem_id") == elem_id)


def fn_index(url: str, api_name: str | None = None, trigger: tuple[str, str] | None = None) -> int:
    """A dependency by its API name, or by its trigger (element id, event) for the private ones."""
    served = config(url)
    if trigger is not None:
        target = [next(c["id"] for c in served["components"] if c.get("props", {}).get("elem_id") == trigger[0]),
                  trigger[1]]
    for dependency in served["dependencies"]:
        if api_name is not None and dependency.get("api_name") == api_name:
            return dependency["id"]
        if trigger is not None and target in dependency["targets"]:
            return dependency["id"]
    raise AssertionError(f"no dependency {api_name or trigger}")


def upload(url: str, path) -> dict:
    with open(path, "rb") as file:
        stored = httpx.post(f"{url}/gradio_api/upload", files={"files": (path.name, file)}).json()[0]
    return {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def new_session() -> str:
    return uuid.uuid4().hex[:11]


def join(url: str, index: int, data: list, session: str, event_data=None) -> str:
    """Put an event in gradio's queue as the page does; returns its event id. ``data`` may hold NaN."""
    body = {"data": data, "fn_index": index, "trigger_id": None, "session_hash": session, "event_data": event_data}
    response = httpx.post(f"{url}/gradio_api/queue/join", content=json.dumps(body),
                          headers={"content-type": "application/json"})
    response.raise_for_status()
    return response.json()["event_id"]


def queue_messages(url: str, session: str, timeout: float = 120):
    """The session's stream of queue messages, as dicts."""
    with httpx.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])


def raw_call(url: str, index: int, data: list, queued: bool = True, *, session: str | None = None,
             event_data=None) -> dict:
    """One event as the page sends it; returns the completed message ({"success": ..., "output": ...}); unqueued,
    also the HTTP status ("status")."""
    session = session or new_session()
    if not queued:
        body = {"data": data, "fn_index": index, "trigger_id": None, "session_hash": session,
                "event_data": event_data}
        response = httpx.post(f"{url}/gradio_api/run/predict", content=json.dumps(body),
                              headers={"content-type": "application/json"}, timeout=60)
        payload = response.json()
        return {"success": response.status_code == 200 and "error" not in payload, "output": payload,
                "status": response.status_code}
    join(url, index, data, session, event_data)
    for message in queue_messages(url, session):
        if message.get("msg") == "process_completed":
            return message
    raise AssertionError("no completed message")
