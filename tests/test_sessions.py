"""One run, one writer: session claims, takeover by the newest session, and the chain a resume
follows (colabkit.checkpoint.sessions through the CheckpointManager).

Each manager has its own cache folder, as on two VMs. The end-to-end version, two real
trainers in two processes, is in test_exact_resume.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from colabkit.checkpoint.chain import Chain
from colabkit.checkpoint.format import checkpoint_name, read_state, step_of, write_checkpoint
from colabkit.checkpoint.manager import CheckpointManager
from colabkit.checkpoint.policy import CheckpointRecord
from colabkit.checkpoint.sessions import Claim
from colabkit.clock import FakeClock
from colabkit.errors import RunSupersededError
from colabkit.storage import LocalStore, MemoryStore
from colabkit.storage.faults import FaultyStore


@pytest.fixture
def store():
    return FaultyStore(MemoryStore("sessions-test"))


@pytest.fixture
def vm(tmp_path, store):
    """``vm("a")``: a manager on the shared store with its own cache (its own VM)."""
    managers = []
    clock = FakeClock(start=1_790_000_000.0)

    def vm(name, **kwargs):
        clock.advance(60)
        kwargs.setdefault("keep_policy", 10)
        manager = CheckpointManager(store, cache_dir=tmp_path / name, clock=clock, **kwargs)
        managers.append(manager)
        return manager

    yield vm
    for manager in managers:
        manager._closed = True
        manager._pipeline.stop()


def save(manager, step):
    arrays = {"w": np.full(3, step, np.float32)}
    manager.save(step, arrays, {"epoch": 0})
    return manager


def checkpoints(store):
    return sorted(i.name for i in store.list() if step_of(i.name) is not None)


def written_by(store, tmp_path, name):
    store.get(name, tmp_path / "look")
    return read_state(tmp_path / "look")["session"]


def test_the_newest_session_takes_over_and_the_old_one_commits_nothing(vm, store):
    a = vm("a")
    assert a.restore() is None
    save(a, 1).wait()
    save(a, 2).wait()
    b = vm("b")
    assert b.restore().state["step"] == 2
    b.claim()  # what a trainer does once the checkpoint fits its model: the takeover
    save(a, 3)
    with pytest.raises(RunSupersededError) as caught:
        a.wait()
    message = str(caught.value)
    assert f"session {b.sessions.id}" in message and "resumed from step 2" in message
    assert "since 2026-" in message and "committed nothing" in message
    assert a.superseded is caught.value and a.status.startswith("superseded: ")
    assert checkpoints(store) == [checkpoint_name(1), checkpoint_name(2)]
    save(a, 4)  # training a little further changes nothing: the old session is done
    with pytest.raises(RunSupersededError):
        a.close()
    save(b, 3).wait()
    assert checkpoints(store) == [checkpoint_name(s) for s in (1, 2, 3)]


def test_a_takeover_noticed_late_never_mixes_the_trajectories(vm, store, tmp_path, caplog):
    """On the Drive mount the old VM sees the new claim only after Drive's delays: it can
    still commit. That checkpoint is never resumed from, never counted as the run's, and it
    cannot make the old session prune the new one's checkpoints."""
    a = vm("a", keep_policy=1)
    a.restore()
    save(a, 4).wait()
    b = vm("b", keep_policy=1)
    assert b.restore().state["step"] == 4
    b.claim()
    a.sessions.check = lambda: None  # a's view of the store lags: it sees no newer claim
    save(b, 5).wait()
    save(a, 8).wait()  # a's stray commit, newer by step than anything b has
    assert checkpoints(store) == [checkpoint_name(5), checkpoint_name(8)]  # b's 5 survived
    assert written_by(store, tmp_path, checkpoint_name(8)) == a.sessions.id

    c = vm("c", keep_policy=1)
    with caplog.at_level(logging.WARNING):
        restored = c.restore()
    assert restored.name == checkpoint_name(5) and restored.state["session"] == b.sessions.id
    assert "Not resuming from ckpt-000000000008.ckpt" in caplog.text
    assert c.latest().name == checkpoint_name(5)
    save(c, 6).wait()
    assert checkpoints(store) == [checkpoint_name(6), checkpoint_name(8)]  # stray one kept
    save(c, 9).wait()
    assert checkpoints(store) == [checkpoint_name(9)]  # once passed, the stray one goes too


def test_two_sessions_claiming_at_once_agree_on_one_owner(vm, store):
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b, c = vm("b"), vm("c")
    claims = b.sessions.read()  # both read the claims before either writes its own
    b.sessions.claim(claims, checkpoint_name(1), 1, a.sessions.id)
    c.sessions.claim(claims, checkpoint_name(1), 1, a.sessions.id)
    assert b.sessions.mine.order[0] == c.sessions.mine.order[0] == 2
    outcomes = []
    for manager in (b, c):
        try:
            manager.sessions.check()
            outcomes.append("owner")
        except RunSupersededError:
            outcomes.append("superseded")
    assert sorted(outcomes) == ["owner", "superseded"]


def test_checkpoints_from_before_claims_existed_are_followed(vm, store, tmp_path):
    """A run written by an older colabkit (no session in its checkpoints, no claims)."""
    old = tmp_path / "old.ckpt"
    for step in (3, 6):
        write_checkpoint(old, {"w": np.full(3, step, np.float32)}, {"step": step, "epoch": 0})
        store.put(old, checkpoint_name(step))
    a = vm("a")
    assert a.restore().state["step"] == 6
    save(a, 7).wait()
    b = vm("b")
    assert b.restore().state["step"] == 7
    assert (None, 6) in Chain(b.sessions.read()) and (None, 9) not in Chain(b.sessions.read())


def claim(seq, session, step=None, parent=None, lineage=None):
    """A claim as the store holds it: ``seq`` orders them (the newest is the highest)."""
    name = f"sessions/{seq:06d}-20261201T000000Z-{session}.json"
    return Claim(name, session, 0.0, resumed_step=step, parent=parent, resumed_from="x",
                 parent_lineage=lineage)  # fmt: skip


def test_the_chain_follows_each_session_back_to_where_it_resumed():
    claims = [
        claim(1, "aaaaaaaa"),
        claim(2, "bbbbbbbb", 8, "aaaaaaaa"),
        claim(3, "cccccccc", 12, "bbbbbbbb"),
    ]
    chain = Chain(claims)
    assert ("cccccccc", 999) in chain
    assert ("bbbbbbbb", 12) in chain and ("bbbbbbbb", 13) not in chain
    assert ("aaaaaaaa", 8) in chain and ("aaaaaaaa", 9) not in chain
    assert (None, 1) not in chain  # the first session started afresh
    assert ("dddddddd", 1) not in chain  # unknown session, nothing before the first claim
    assert (None, 5) in Chain([])  # no claims at all: every checkpoint belongs


A, B, C, D = "aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd"
ON_CHAIN = [claim(1, A), claim(2, B, 8, A), claim(3, D, 8, A), claim(4, C, 12, B)]  # D: superseded


def test_where_a_checkpoint_stands_on_the_chain():
    chain = Chain(ON_CHAIN)
    assert chain.place((C, 20)) is True and chain.place((A, 8)) is True
    assert chain.place((A, 9)) is None and chain.place((D, 9)) is None
    # a session that never claimed branches off where its lineage meets the chain
    assert chain.place(("eeeeeeee", 14, [[B, 10]])) == 10
    assert chain.place(("eeeeeeee", 14, [["ffffffff", 13], [B, 10]])) == 10  # through another
    assert chain.place(("eeeeeeee", 3, [[None, None]])) == -1  # a fresh start: the run's start
    assert chain.place(("eeeeeeee", 14, [[A, 9]])) is None  # off the chain: past A's last step
    assert chain.place(("eeeeeeee", 14, [[D, 9]])) is None  # from the superseded session
    # the superseded session's own checkpoints are off the chain, lineage or not
    assert chain.place((D, 10, [[A, 8]])) is None
    assert Chain([]).place((None, 5)) is True  # no claims: everything is on it


def test_checkpoints_of_no_known_session_count_up_to_where_the_record_ends():
    """The newest claim resumed from a session that never claimed and recorded no lineage (or
    from a checkpoint older than claims): checkpoints of no known session count up to there."""
    chain = Chain([claim(1, D, 6), claim(2, A, 4, "xxxxxxxx")])
    assert chain.place(("xxxxxxxx", 4)) is True and chain.place(("xxxxxxxx", 5)) is None
    assert chain.place((None, 4)) is True and chain.place((None, 5)) is None
    assert chain.place(("zzzzzzzz", 3)) is True  # an unknown session without lineage: the same
    assert chain.place((D, 3)) is None  # but a claimed one off the chain: never
    older = Chain([claim(1, D, 6), claim(2, A, 6)])  # resumed from a checkpoint of before claims
    assert older.place((None, 6)) is True and older.place((D, 5)) is None


def test_claims_that_point_at_each_other_end_the_chain_instead_of_looping():
    """A store holding claims that resumed from each other (edited, or corrupt) is read."""
    import threading

    built = []
    thread = threading.Thread(
        target=lambda: built.append(Chain([claim(1, A, 5, B), claim(2, B, 8, A)])), daemon=True
    )
    thread.start()
    thread.join(10)
    assert built, "Chain() did not return"
    assert built[0].place((B, 100)) is True and built[0].place((A, 8)) is True
    assert built[0].place((A, 9)) is None


def record(session, step, lineage=None):
    return CheckpointRecord(f"c{step}", step, 0.0, session=session, lineage=lineage)


def test_select_keeps_a_branch_only_while_the_chain_holds_nothing_newer():
    chain, outside = Chain(ON_CHAIN), []

    def select(newest_first):
        outside.clear()
        return list(chain.select(newest_first, outside=outside.append))

    # E resumed from C's step 14 and never claimed; C went on to 16 and 17: E's 15 is left out
    went_on = [record(C, 17), record(C, 16), record("eeeeeeee", 15, [[C, 14]]), record(C, 14)]
    assert select(went_on) == [went_on[0], went_on[1], went_on[3]] and outside == [went_on[2]]
    # C's 17 died with its VM; E resumed from C's 16: E's 17 continues the newest the run has
    lost = [record("eeeeeeee", 17, [[C, 16]]), record(C, 16), record(B, 12), record(D, 10)]
    assert select(lost) == lost[:3] and outside == [lost[3]]
    # a session that started afresh and never claimed is not the run's, once the run has any
    fresh = [record("eeeeeeee", 3, [[None, None]]), record(A, 1)]
    assert select(fresh) == fresh[1:] and outside == fresh[:1]


def test_a_store_that_cannot_take_the_claim_stops_the_start_with_one_line(vm, store):
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    store.fail(28, ops=("put",))
    b = vm("b")
    b.restore()
    with pytest.raises(OSError, match=r"Could not claim the run in memory://.*no space left"):
        b.claim()


def test_the_superseded_trainer_stops_on_a_local_folder_too(tmp_path):
    """The same on a plain folder (what the Drive mount is, seen from the VM)."""
    store = LocalStore(tmp_path / "run" / "checkpoints")
    clock = FakeClock()
    a = CheckpointManager(store, cache_dir=tmp_path / "a", clock=clock)
    a.restore()
    save(a, 1).wait()
    b = CheckpointManager(store, cache_dir=tmp_path / "b", clock=clock)
    b.restore()
    b.claim()
    save(a, 2)
    with pytest.raises(RunSupersededError):
        a.close()
    b.close()
    assert checkpoints(store) == [checkpoint_name(1)]
    assert len(store.list("sessions/")) == 2


def died_before_its_first_commit(vm, store, name, step, *, claimed=False):
    """A session that restored, staged a checkpoint and died before its first commit (so
    before its claim reached the store): what a SIGKILL early in a session leaves.
    ``claimed``: it claimed the run first (claims go ahead of the commit), then died."""
    manager = vm(name, retry_delays=(0,))
    manager.restore()
    if claimed:
        manager.claim()
    store.fail(5, ops=("put",))
    save(manager, step)
    with pytest.raises(OSError):
        manager.wait()
    manager._closed = True
    manager._pipeline.stop()  # before the store heals: nothing of it reaches the store
    store.heal()
    return manager


def test_a_checkpoint_staged_by_a_session_that_never_claimed_still_continues_the_run(
    vm, store, tmp_path
):
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b = died_before_its_first_commit(vm, store, "b", 2)
    assert not [c for c in store.list("sessions/") if b.sessions.id in c.name]
    again = CheckpointManager(store, cache_dir=tmp_path / "b", clock=FakeClock())  # same VM
    restored = again.restore()
    assert restored.state["step"] == 2 and restored.state["session"] == b.sessions.id
    again.claim()
    save(again, 3).wait()
    again.close()
    elsewhere = vm("c")  # the chain goes on through the session that never claimed
    assert elsewhere.latest().step == 3
    assert (b.sessions.id, 2) in Chain(elsewhere.sessions.read())
    assert (a.sessions.id, 1) in Chain(elsewhere.sessions.read())


def test_but_not_when_it_continues_an_older_point_than_the_owner(vm, store, tmp_path, caplog):
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b = died_before_its_first_commit(vm, store, "b", 5)  # from step 1, on another VM
    save(a, 3).wait()  # a trains on (b never claimed)
    newer = vm("newer")  # then a third VM takes the run over from a's step 3
    assert newer.restore().state["step"] == 3
    newer.claim()
    again = CheckpointManager(store, cache_dir=tmp_path / "b", clock=FakeClock())
    with caplog.at_level(logging.WARNING):
        assert again.restore().state["step"] == 3  # b's staged step 5 branched off at step 1
    assert f"session {b.sessions.id} wrote it" in caplog.text
    again.close()


def test_the_cli_marks_a_superseded_checkpoint_and_neither_verifies_nor_prunes_by_it(
    tmp_path, capsys
):
    import json

    from colabkit.cli import main

    store = LocalStore(tmp_path / "run" / "checkpoints")
    a = CheckpointManager(store, cache_dir=tmp_path / "a", clock=FakeClock(), keep_policy=10)
    a.restore()
    save(a, 4).wait()
    b = CheckpointManager(store, cache_dir=tmp_path / "b", clock=FakeClock(), keep_policy=10)
    b.restore()
    b.claim()
    a.sessions.check = lambda: None  # a's view lags: it commits once more
    save(b, 5).wait()
    save(a, 8).wait()
    for manager in (a, b):
        manager.close()
    run = str(tmp_path / "run")
    assert main(["ckpt", "ls", run, "--json"]) == 0
    listed = {c["name"]: c["superseded"] for c in json.loads(capsys.readouterr().out)}
    assert listed == {
        checkpoint_name(8): True,
        checkpoint_name(5): False,
        checkpoint_name(4): False,
    }
    (tmp_path / "run" / "checkpoints" / checkpoint_name(5)).write_bytes(b"damaged")
    assert main(["ckpt", "verify", run]) == 1  # the run's newest is 5, not the stray 8
    assert "newest checkpoint ckpt-000000000005.ckpt does not verify" in capsys.readouterr().err
    assert main(["ckpt", "prune", run, "--keep", "1"]) == 0
    left = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert left == [checkpoint_name(s) for s in (4, 5, 8)]  # 5 kept (newest), 4 newest good


def test_two_sessions_that_resumed_from_one_point_and_died_early_leave_a_usable_chain(
    vm, store, tmp_path
):
    """What the SIGKILL test found: b claims from step 1 and dies before committing; c resumes
    from step 1 too (b has nothing newer), stages step 2 and dies before its claim reached the
    store. c's step 2 continues the point b took over: a resume on c's VM uses it."""
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b = vm("b")
    b.restore()
    b.claim()  # claimed, then killed before its first commit
    c = died_before_its_first_commit(vm, store, "c", 2)
    again = CheckpointManager(store, cache_dir=tmp_path / "c", clock=FakeClock())
    assert again.restore().state["session"] == c.sessions.id
    again.close()


def test_sessions_that_died_before_their_claims_one_after_another_still_continue_the_run(
    vm, store, tmp_path, caplog
):
    """What the SIGKILL test found next: on one VM, b resumes from a's step 1 and stages step 2,
    c resumes from b's step 2 and stages step 3; both die before their claims reach the store.
    c's step 3 continues the run through b (never claimed) back to a, the owner."""
    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b = died_before_its_first_commit(vm, store, "vm2", 2)
    c = died_before_its_first_commit(vm, store, "vm2", 3)
    again = CheckpointManager(store, cache_dir=tmp_path / "vm2", clock=FakeClock())
    with caplog.at_level(logging.WARNING):
        assert again.restore().state["session"] == c.sessions.id
    assert "Not resuming" not in caplog.text
    again.claim()
    save(again, 4).wait()
    again.close()
    chain = Chain(vm("elsewhere").sessions.read())
    for session, step in ((again.sessions.id, 4), (c.sessions.id, 3), (b.sessions.id, 2)):
        assert (session, step) in chain
    assert (a.sessions.id, 1) in chain and (a.sessions.id, 2) not in chain
    assert (b.sessions.id, 3) not in chain and (c.sessions.id, 4) not in chain


def test_when_the_newest_sessions_checkpoints_died_with_their_vm_the_branch_that_went_on_counts(
    vm, store, tmp_path, caplog
):
    """What the SIGKILL test found third: b resumes from a's step 1 and claims, stages step 2
    and dies before uploading it; c resumes from b's staged step 2 on the same VM, claims and
    dies before uploading it either. The VM goes, and with it b's step 2. d resumes from a's
    step 1 (the newest the run still holds), stages its own step 2 and dies before its claim.
    d's step 2 continues the newest the run has: the next resume uses it, with no warning."""
    import shutil

    a = vm("a")
    a.restore()
    save(a, 1).wait()
    b = died_before_its_first_commit(vm, store, "vm2", 2, claimed=True)
    c = CheckpointManager(store, cache_dir=tmp_path / "vm2", clock=FakeClock())
    c._pipeline.queue_upload = lambda name: None  # killed before it re-uploaded b's step 2
    assert c.restore().state["session"] == b.sessions.id
    c.claim()
    c._closed = True
    c._pipeline.stop()
    shutil.rmtree(tmp_path / "vm2")  # the VM died: only the store is left
    d = died_before_its_first_commit(vm, store, "vm2", 2)
    again = CheckpointManager(store, cache_dir=tmp_path / "vm2", clock=FakeClock())
    with caplog.at_level(logging.WARNING):
        restored = again.restore()
    assert restored.state["step"] == 2 and restored.state["session"] == d.sessions.id
    assert "Not resuming" not in caplog.text
    again.claim()
    save(again, 3).wait()
    again.close()
    elsewhere = vm("elsewhere")
    assert elsewhere.latest().step == 3
    assert elsewhere.restore().state["session"] == again.sessions.id
