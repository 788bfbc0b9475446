"""Stops as identities and the tour calendar: a visits database of the first release (no stop
ids) is migrated at start with every record kept; the gateway switches to the planned stop of the
day; `GET /api/tour` lists the calendar; two stops in the same town keep their own figures, after
a restart too."""

from __future__ import annotations

import datetime
import sqlite3

from conftest import stop_gateway
from fabrique_testlib import ADMIN_TOKEN, connect, wait_for
from peer_survey import Api

# The schema and some records of the first release, before stops had an identity.
OLD_DATABASE = """
CREATE TABLE stop (role TEXT PRIMARY KEY, town TEXT NOT NULL, venue TEXT NOT NULL,
    first_day TEXT NOT NULL, last_day TEXT NOT NULL);
CREATE TABLE visits (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, day TEXT NOT NULL,
    stop TEXT NOT NULL, audience TEXT NOT NULL, size INTEGER NOT NULL CHECK (size > 0), source TEXT NOT NULL);
CREATE TABLE survey (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, day TEXT NOT NULL,
    stop TEXT NOT NULL, audience TEXT NOT NULL, satisfaction INTEGER NOT NULL,
    view_changed INTEGER NOT NULL, source TEXT NOT NULL);
INSERT INTO stop VALUES ('current', 'Lens', 'Lycée Condorcet', '2026-11-23', '2026-11-27');
INSERT INTO stop VALUES ('configured', 'Lens', 'Lycée Condorcet', '2026-11-23', '2026-11-27');
INSERT INTO visits VALUES (1, 1795000000000000000, '2026-11-23', 'Lens', 'student', 24, 'http');
INSERT INTO visits VALUES (2, 1795000000000000001, '2026-11-24', 'Lens', 'teacher', 2, 'http');
INSERT INTO visits VALUES (3, 1790000000000000000, '2026-10-05', 'Arras', 'company', 5, 'opcua');
INSERT INTO survey VALUES (1, 1795000000000000000, '2026-11-23', 'Lens', 'student', 4, 1, 'http');
INSERT INTO survey VALUES (2, 1795000000000000001, '2026-11-23', 'Lens', 'student', 3, 0, 'mqtt');
INSERT INTO survey VALUES (3, 1795000000000000002, '2026-11-24', 'Lens', 'teacher', 1, 1, 'http');
INSERT INTO survey VALUES (4, 1790000000000000000, '2026-10-05', 'Béthune', 'company', 2, 0, 'http');
"""


async def _equal(value, expected) -> bool:
    return await value == expected


def answer(audience: str = "parent") -> dict:
    return {"audience": audience, "satisfaction": 4, "view_changed": True}


async def test_migration_tour_and_two_stops_in_one_town(gateway_factory, tmp_path):
    today = datetime.date.today()
    day = lambda n: (today + datetime.timedelta(days=n)).isoformat()  # noqa: E731
    school = {"town": "Liévin", "venue": "Collège Descartes", "kind": "school", "first_day": day(-1), "last_day": day(1)}
    event = {"town": "Liévin", "venue": "Collège Descartes", "kind": "event", "first_day": day(60), "last_day": day(62)}
    config = tmp_path / "tour.toml"
    config.write_text(
        "".join(
            f'[[visits.tour]]\ntown = "{s["town"]}"\nvenue = "{s["venue"]}"\nkind = "{s["kind"]}"\n'
            f'first_day = "{s["first_day"]}"\nlast_day = "{s["last_day"]}"\n\n'
            for s in (event, school)
        ),
        encoding="utf-8",
    )
    data = tmp_path / "tour-data"
    data.mkdir()
    db = sqlite3.connect(str(data / "visits.sqlite"))
    db.executescript(OLD_DATABASE)
    db.commit()
    db.close()

    gw = gateway_factory(name="tour", args=["--config", str(config)])
    assert gw.data_dir == data
    api = Api(gw.http_url)
    admin = Api(gw.http_url, token=ADMIN_TOKEN)

    # Every record of the old file is still counted, each under a stop of its own town.
    stats = api.stats()
    assert stats["survey"]["responses"] == 4 and stats["visits"]["visitors"] == 31
    assert {k: v["responses"] for k, v in stats["survey"]["by_stop"].items()} == {"Lens": 3, "Béthune": 1}
    assert {k: v["visitors"] for k, v in stats["visits"]["by_stop"].items()} == {"Lens": 26, "Arras": 5}
    towns = sorted(s["town"] for s in stats["stops"].values())
    assert towns == ["Arras", "Béthune", "Lens", "Liévin", "Liévin"]
    db = sqlite3.connect(str(data / "visits.sqlite"))
    try:
        assert db.execute("SELECT COUNT(*) FROM survey WHERE stop_id IS NULL").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM visits WHERE stop_id IS NULL").fetchone()[0] == 0
    finally:
        db.close()

    # The planned stop of the day is the current stop.
    status, stop = api.request("GET", "/api/stop")
    assert status == 200 and (stop["town"], stop["first_day"]) == ("Liévin", school["first_day"]), stop
    status, tour = api.request("GET", "/api/tour")
    assert status == 200, tour
    assert [(s["kind"], s["state"]) for s in tour["stops"]] == [("school", "current"), ("event", "upcoming")]
    assert tour["next"]["first_day"] == event["first_day"]
    assert tour["current"]["id"] == tour["stops"][0]["id"] != tour["stops"][1]["id"]
    school_id, event_id = str(tour["stops"][0]["id"]), str(tour["stops"][1]["id"])

    # One answer at the school stop, two when the truck comes back to Liévin for the event.
    assert api.request("POST", "/api/survey", answer())[0] == 201
    back = {k: event[k] for k in ("town", "venue", "first_day", "last_day")}
    assert admin.request("PUT", "/api/stop", back)[0] == 200
    for audience in ("parent", "guidance_counsellor"):
        assert api.request("POST", "/api/survey", answer(audience))[0] == 201

    def check(stats: dict) -> None:
        by_id = stats["survey"]["by_stop_id"]
        assert by_id[school_id]["responses"] == 1 and by_id[event_id]["responses"] == 2, by_id
        assert stats["survey"]["by_stop"]["Liévin"]["responses"] == 3
        assert stats["survey"]["current_stop"]["responses"] == 2
        assert stats["stop_id"] == int(event_id)
        assert stats["stops"][event_id]["kind"] == "event" and stats["stops"][school_id]["kind"] == "school"

    check(api.stats())

    # OPC UA shows the current stop's identity and kind.
    async def identity():
        return (await opc.read("Fabrique/Stop/Id"), await opc.read("Fabrique/Stop/Kind"))

    async with connect(gw) as opc:
        assert await wait_for(
            lambda: _equal(identity(), (int(event_id), "event")), 15, what="Stop/Id and Stop/Kind"
        )
    stop_gateway(gw)
    # After a restart: the stop set by hand during the planned one stays, figures unchanged.
    gw = gateway_factory(name="tour", args=["--config", str(config)])
    check(Api(gw.http_url).stats())
