import re

from brat_sessions.issues.ids import new_id

from ..helpers import brat, brat_json


def test_task_create_list_show(repo):
    data = brat_json(
        "task",
        "create",
        "Fix the parser",
        "--body",
        "Paths: a.py",
        "--convoy",
        "c-20250114-a2f9",
        "--priority",
        "P1",
        cwd=repo,
    )
    assert re.fullmatch(r"t-\d{8}-[0-9a-f]{4}", data["task_id"])
    assert re.fullmatch(r"[0-9a-f]{32}", data["grite_issue_id"])
    assert data["task"]["labels"] == sorted(
        ["type:task", f"task:{data['task_id']}", "status:queued", "convoy:c-20250114-a2f9", "priority:P1"]
    )
    listed = brat_json("task", "list", cwd=repo)
    assert [t["task_id"] for t in listed["tasks"]] == [data["task_id"]]
    shown = brat_json("task", "show", data["grite_issue_id"], cwd=repo)
    assert shown["task"]["task_id"] == data["task_id"] and shown["sessions"] == []
    assert brat("task", "show", "t-20000101-0000", cwd=repo).returncode == 3


def test_new_ids_skip_ids_the_repository_holds():
    taken = {f"s-20250114-{n:04x}" for n in range(65536)} - {"s-20250114-beef"}
    assert new_id("s", 1736812800000, taken.__contains__) == "s-20250114-beef"


def test_bad_arguments_exit_2(repo):
    out = brat("task", "create", "x", "--status", "nonsense", cwd=repo)
    assert out.returncode == 2 and "Traceback" not in out.stderr
