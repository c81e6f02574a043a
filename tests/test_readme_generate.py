"""docs/generate.md's checked output blocks are what ptx prints today (test_readme.py checks the other
pages; this page's exports take minutes, so a worker of its own checks it)."""
from test_readme import REPO, problems_of


def test_checked_output_blocks_match_what_ptx_prints(runs, tmp_path):
    problems = problems_of([REPO / "docs" / "generate.md"], runs, tmp_path)
    assert not problems, "\n\n".join(problems)
