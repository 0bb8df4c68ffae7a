"""The watchdog of distributed jobs (gluondet.engine.watchdog): the verdict as a pure function of
what the server heard and when (an injected clock), then the server and heartbeats over loopback,
where each test waits on the callback's event (a hang guard, never a time limit it asserts)."""
import socket
import threading

import pytest

from gluondet.engine.watchdog import Heartbeat, Position, RankView, WatchdogServer, beat_interval, verdict

HANG_GUARD_S = 120


def views(**ranks):
    return {int(k[1:]): v for k, v in ranks.items()}


def test_a_healthy_job_has_no_verdict():
    now = 1000.0
    job = views(r0=RankView(last_heard=now - 1, phase="train", position=(0, 5), position_since=now - 200),
                r1=RankView(last_heard=now - 2, phase="train", position=(0, 5), position_since=now - 200))
    assert verdict(job, now, timeout=30) is None  # both waiting in the same step: not judged


def test_a_closed_connection_is_named_at_once():
    job = views(r0=RankView(last_heard=10.0), r1=RankView(last_heard=10.0, gone=True, position=(1, 3)))
    rank, line = verdict(job, 10.0, timeout=300)
    assert rank == 1 and line.startswith("rank 1 is gone") and "epoch 2, iteration 3" in line


def test_silence_past_the_timeout_is_named_not_before():
    job = views(r0=RankView(last_heard=100.0), r1=RankView(last_heard=69.0), r2=RankView(last_heard=71.0))
    rank, line = verdict(job, 100.0, timeout=30)
    assert rank == 1 and "no heartbeat for 31 s" in line
    job[1].last_heard = 70.5
    assert verdict(job, 100.0, timeout=30) is None


def test_a_rank_stuck_behind_the_others_is_named():
    job = views(r0=RankView(last_heard=99.0, phase="train", position=(0, 4), position_since=90.0),
                r1=RankView(last_heard=99.0, phase="train", position=(0, 3), position_since=50.0))
    rank, line = verdict(job, 100.0, timeout=40)
    assert rank == 1 and "stuck at epoch 1, iteration 3 for 50 s" in line and "rank 0 waits" in line


def test_validation_and_finished_ranks_are_not_judged_by_progress():
    # rank 0 validates for long while rank 1 waits at the next epoch's first step
    job = views(r0=RankView(last_heard=999.0, phase="epoch-end", position=(0, 9), position_since=0.0),
                r1=RankView(last_heard=999.0, phase="train", position=(1, 0), position_since=0.0))
    assert verdict(job, 1000.0, timeout=40) is None
    # a rank that said goodbye is not judged at all
    job = views(r0=RankView(last_heard=0.0, done=True), r1=RankView(last_heard=999.0))
    assert verdict(job, 1000.0, timeout=40) is None


def test_beats_are_a_tenth_of_the_timeout_within_bounds():
    assert beat_interval(300) == 5.0 and beat_interval(10) == 1.0 and beat_interval(0.5) == 0.2


class Verdicts:
    def __init__(self):
        self.got, self.event = [], threading.Event()

    def __call__(self, rank, line):
        self.got.append((rank, line))
        self.event.set()

    def wait(self):
        assert self.event.wait(HANG_GUARD_S), "no verdict (hang guard)"
        return self.got[0]


def server(expected=(), timeout=2.0, **kw):
    verdicts = Verdicts()
    return WatchdogServer(expected, timeout, token="t", on_verdict=verdicts, **kw), verdicts


def test_a_rank_whose_process_goes_is_named_and_the_others_stopped_quietly():
    srv, verdicts = server(timeout=60)
    lost = {r: Verdicts() for r in (1, 2)}
    beats = {r: Heartbeat(srv.address, r, Position(), 60, token="t", on_lost=lambda line, r=r: lost[r](r, line))
             for r in (1, 2)}
    beats[2].position.set("train", 0, 3)
    beats[1].sock.shutdown(socket.SHUT_RDWR)  # as a killed process's socket: closed, no goodbye
    assert verdicts.wait()[0] == 1 and "rank 1 is gone" in verdicts.got[0][1]
    assert lost[2].wait() == (2, "")  # told to stop, without a line of its own
    srv.close()


def test_a_silent_rank_is_named_after_the_timeout():
    srv, verdicts = server(timeout=1.0)
    stopped = Heartbeat(srv.address, 1, Position(), 1.0, token="t", on_lost=lambda line: None)
    stopped.finished.set()  # its threads stop sending, as a stopped process's do
    rank, line = verdicts.wait()
    assert rank == 1 and "stopped answering: no heartbeat" in line
    srv.close()


def test_a_rank_that_failed_with_its_own_line_stops_the_job_without_another():
    srv, verdicts = server(timeout=60)
    other_lost = Verdicts()
    failing = Heartbeat(srv.address, 1, Position(), 60, token="t", on_lost=lambda line: None)
    Heartbeat(srv.address, 2, Position(), 60, token="t", on_lost=lambda line: other_lost(2, line))
    failing.bye(failed=True)
    assert verdicts.wait() == (1, "")
    assert other_lost.wait() == (2, "")
    srv.close()


def test_a_normal_end_is_silent_on_both_sides():
    srv, verdicts = server(timeout=60)
    lost = Verdicts()
    beat = Heartbeat(srv.address, 1, Position(), 60, token="t", on_lost=lambda line: lost(1, line))
    beat.bye()
    srv.close()
    assert beat.finished.is_set()
    assert not verdicts.event.is_set() and not lost.event.is_set()


class _Registered(dict):
    """The server's clients, with an event set when a rank's connection is registered."""

    def __init__(self):
        super().__init__()
        self.event = threading.Event()

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.event.set()


def test_the_server_going_is_said_by_the_rank():
    srv, _ = server(timeout=60)
    srv.clients = _Registered()  # before the rank connects: the test waits for its registration
    lost = Verdicts()
    Heartbeat(srv.address, 1, Position(), 60, token="t", server_name="rank 0", on_lost=lambda line: lost(1, line))
    assert srv.clients.event.wait(HANG_GUARD_S), "the rank never connected (hang guard)"
    with srv.lock:  # as rank 0's process dying: its connections close, nothing said
        for sock in srv.clients.values():
            sock.shutdown(socket.SHUT_RDWR)
    rank, line = lost.wait()
    assert line.startswith("rank 0 is gone")


def test_a_rank_that_never_connects_is_named_when_expected():
    srv, verdicts = server(expected=(0, 1), timeout=1.0)
    srv.local(0, Position())  # rank 0 lives in the server's process
    rank, line = verdicts.wait()
    assert rank == 1 and "no heartbeat" in line and "before training" in line
    srv.close()


def test_settle_names_a_rank_silent_for_a_few_beats_at_once():
    # a collective failed (Gloo gave up on a stopped peer): no need to wait for the full timeout
    now = [1000.0]
    srv, verdicts = server(timeout=300, clock=lambda: now[0])
    with srv.lock:
        srv.views[1] = RankView(last_heard=now[0])  # as a rank that connected, then went silent
    now[0] += 31  # 31 s of silence, far below 300 s, above 3 beats of 5 s
    srv.settle(timeout=HANG_GUARD_S)
    rank, line = verdicts.wait()
    assert rank == 1 and "no heartbeat for 31 s" in line
    srv.close()


def test_a_stranger_connecting_is_ignored():
    srv, verdicts = server(timeout=60)
    with socket.create_connection(srv.address) as s:
        s.sendall(b'{"token": "wrong", "rank": 1}\n')
        assert s.recv(10) == b""  # closed on it
    assert 1 not in srv.views
    srv.close()


def test_position_sends_a_new_phase_at_once():
    position = Position()
    position.set("train", 0, 0)
    assert position.changed.is_set()
    position.changed.clear()
    position.set("train", 0, 1)  # a step: no hurry
    assert not position.changed.is_set()
    assert position.message() == {"phase": "train", "at": [0, 1]}


@pytest.mark.parametrize("host", ["127.0.0.1"])
def test_an_unreachable_server_is_one_line(host):
    from gluondet.errors import GluondetError

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(GluondetError, match=f"cannot reach the watchdog of rank 0 at {host}:{port}"):
            Heartbeat((host, port), 1, Position(), 5, token="t")
