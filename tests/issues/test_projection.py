from brat_sessions.index import Index
from brat_sessions.storage import events as ev
from brat_sessions.storage.events import make_event
from brat_sessions.storage.repo import open_repo

from ..helpers import append_raw

A = bytes.fromhex("aa" * 16)
B = bytes.fromhex("bb" * 16)
ISSUE = bytes.fromhex("03" * 16)


def issue(repo):
    return Index(open_repo(repo)).refresh().issue(ISSUE.hex())


def test_issue_fold_is_last_writer_wins(repo):
    append_raw(repo, [make_event(ISSUE, A, 100, ev.ISSUE_CREATED, ["Title", "Body", ["b", "a"]])])
    append_raw(repo, [make_event(ISSUE, A, 300, ev.ISSUE_UPDATED, ["Newer", None])])
    append_raw(repo, [make_event(ISSUE, B, 200, ev.ISSUE_UPDATED, ["Older", "Body 2"])])  # late arrival
    append_raw(repo, [make_event(ISSUE, A, 400, ev.STATE_CHANGED, ["closed"])])
    append_raw(
        repo,
        [
            make_event(ISSUE, A, 410, ev.LABEL_REMOVED, ["a"]),
            make_event(ISSUE, A, 420, ev.LABEL_ADDED, ["c"]),
            make_event(ISSUE, A, 430, ev.ASSIGNEE_ADDED, ["ann"]),
            make_event(ISSUE, A, 440, ev.COMMENT_ADDED, ["plain comment"]),
            make_event(ISSUE, A, 450, ev.LINK_ADDED, ["https://example.invalid", None]),
        ],
    )
    i = issue(repo)
    assert (i.title, i.body, i.state) == ("Newer", "Body 2", "closed")
    assert i.labels == ["b", "c"] and i.assignees == ["ann"]
    assert (i.created_ts, i.updated_ts) == (100, 450)


def test_equal_timestamps_break_ties_by_actor(repo):
    append_raw(repo, [make_event(ISSUE, A, 100, ev.ISSUE_CREATED, ["T", "", []])])
    append_raw(repo, [make_event(ISSUE, B, 200, ev.ISSUE_UPDATED, ["from B", None])])
    append_raw(repo, [make_event(ISSUE, A, 200, ev.ISSUE_UPDATED, ["from A", None])])
    assert issue(repo).title == "from B"


def test_bad_payload_is_reported_and_skipped(repo):
    append_raw(repo, [make_event(ISSUE, A, 100, ev.ISSUE_CREATED, ["T", "", []])])
    append_raw(repo, [make_event(ISSUE, A, 200, ev.LABEL_ADDED, [42])])
    index = Index(open_repo(repo)).refresh()
    assert [p["kind"] for p in index.problems()] == ["bad_event"]
    assert index.issue(ISSUE.hex()).title == "T"
