"""Clients of the visits and survey HTTP API, and the expected figures computed independently.

- `Api`: JSON over HTTP with the standard library (one keep-alive connection per thread).
- `expected_survey`: the figures a set of responses must give, recomputed here from the raw
  answers with the documented definitions (satisfied = satisfaction 3 or 4; shares in percent,
  `100 * part / whole`, 0 without responses).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path

AUDIENCES = [
    "middle_school",
    "high_school",
    "student",
    "job_seeker",
    "retraining",
    "teacher",
    "company",
    "general_public",
    "parent",
    "guidance_counsellor",
]
BROWSE_NAMES = {
    "middle_school": "MiddleSchool",
    "high_school": "HighSchool",
    "student": "Student",
    "job_seeker": "JobSeeker",
    "retraining": "Retraining",
    "teacher": "Teacher",
    "company": "Company",
    "general_public": "GeneralPublic",
    "parent": "Parent",
    "guidance_counsellor": "GuidanceCounsellor",
}


class Api:
    """`request(method, path, body)` -> (status, decoded JSON or text); thread-safe."""

    def __init__(self, base_url: str, timeout: float = 30.0, token: str | None = None,
                 source: str | None = None):
        """`token`: sent as `Authorization: Bearer`; `source`: the local address to connect from
        (another loopback address, to be another client)."""
        assert base_url.startswith("http://")
        host, port = base_url[len("http://") :].split(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self.token = token
        self.source = (source, 0) if source else None
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                              source_address=self.source)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: bytes | str | dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # A keep-alive connection closed by the server: open a new one once.
                conn.close()
                self._local.conn = None
                if attempt == 1:
                    raise
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = raw.decode(errors="replace")
        self.last_headers = dict(response.getheaders())
        return response.status, decoded

    def stats(self, stop: str | None = None) -> dict:
        path = "/api/stats" if stop is None else f"/api/stats?stop={stop}"
        status, body = self.request("GET", path)
        assert status == 200, body
        return body


def make_responses(n: int, seed: int = 5) -> list[dict]:
    """`n` valid responses with a fixed, uneven distribution (audiences, satisfaction, view)."""
    rng = random.Random(seed)
    weights = [4, 3, 2, 1]  # satisfaction 4, 3, 2, 1
    out = []
    for i in range(n):
        audience = AUDIENCES[i % len(AUDIENCES)] if i % 3 else rng.choice(AUDIENCES)
        satisfaction = rng.choices([4, 3, 2, 1], weights=weights)[0]
        out.append(
            {"audience": audience, "satisfaction": satisfaction, "view_changed": rng.random() < 0.62}
        )
    return out


def pct(part: int, whole: int) -> float:
    return 0.0 if whole == 0 else 100 * part / whole


@dataclass
class SurveyFigures:
    responses: int
    satisfied: int
    view_changed: int

    @property
    def satisfied_pct(self) -> float:
        return pct(self.satisfied, self.responses)

    @property
    def view_changed_pct(self) -> float:
        return pct(self.view_changed, self.responses)

    def as_json(self) -> dict:
        return {
            "responses": self.responses,
            "satisfied": self.satisfied,
            "satisfied_pct": self.satisfied_pct,
            "view_changed": self.view_changed,
            "view_changed_pct": self.view_changed_pct,
        }


def expected_survey(responses: list[dict]) -> tuple[SurveyFigures, dict[str, SurveyFigures]]:
    def figures(rows: list[dict]) -> SurveyFigures:
        return SurveyFigures(
            responses=len(rows),
            satisfied=sum(1 for r in rows if r["satisfaction"] >= 3),
            view_changed=sum(1 for r in rows if r["view_changed"]),
        )

    by_audience = {a: figures([r for r in responses if r["audience"] == a]) for a in AUDIENCES}
    return figures(responses), by_audience


def survey_json_subset(section: dict) -> dict:
    """The five figures of a stats section, without its nested maps."""
    return {k: section[k] for k in ("responses", "satisfied", "satisfied_pct", "view_changed", "view_changed_pct")}


# Invalid survey inputs, one per kind of refusal: (body, kind the gateway reports).
INVALID_SURVEY = [
    ('{"audience":"alien","satisfaction":3,"view_changed":true}', "unknown-audience"),
    ('{"audience":"student","satisfaction":5,"view_changed":true}', "out-of-range"),
    ('{"audience":"student","satisfaction":0,"view_changed":false}', "out-of-range"),
    ('{"audience":"student","view_changed":true}', "missing-field"),
    ('{"audience":"student","satisfaction":4}', "missing-field"),
    ('{"audience":"student","satisfaction":4,"view_changed":true', "malformed-json"),
    ("not json at all", "malformed-json"),
    ('{"audience":"student","satisfaction":4,"view_changed":true,"extra":1}', "unknown-field"),
    ('{"audience":"student","satisfaction":"4","view_changed":true}', "wrong-type"),
    ('{"audience":"student","satisfaction":4,"view_changed":"yes"}', "wrong-type"),
    ('{"audience":"student","satisfaction":4,"view_changed":true,"at":"yesterday"}', "bad-time"),
    ('{"audience":"student","satisfaction":4,"view_changed":true,"stop":""}', "bad-stop"),
    ('{"audience":"student","satisfaction":4,"view_changed":true,"stop":"' + "x" * 5000 + '"}', "too-large"),
]


def gateway_args(workdir: Path, broker, influxdb) -> list[str]:
    """`--config` for a gateway with both sinks on: the MQTT broker (which also brings survey
    answers and orders in) and InfluxDB 1.x, written quickly (`flush_ms = 200`)."""
    path = workdir / "sinks.toml"
    path.write_text(
        f"""[mqtt]
enabled = true
broker = "{broker.address}"

[influxdb]
enabled = true
url = "{influxdb.url}"
api = "v1"
database = "fabrique"
flush_ms = 200
""",
        encoding="utf-8",
    )
    return ["--config", str(path)]
