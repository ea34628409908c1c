"Numbers in prose come from code: no measured number is typed into the README's prose, a chapter's markdown or the decisions by hand."
import json
import re
from pathlib import Path

import pytest
from conftest import markdown_of

ROOT = Path(__file__).resolve().parent.parent
# A measured-looking number: a decimal, a percentage, or a number with a unit of time or speed.
NUM = r'\d[\d,]*(?:\.\d+)?(?:e-?\d+)?'
MEASURED = re.compile(rf'(?<![\w.\-])({NUM}(?:-{NUM})?(?:\s?(?:s|ms|min|minutes|h|hours|seconds|GFLOP/s|GB/s)|x)(?![\w/])'
                      rf'|{NUM}\s?%|\d[\d,]*\.\d+(?:e-?\d+)?(?![.\d]))')
# Constants of the paper and the protocol, and versions: not measurements.
ALLOWED = {'0.1', '0.3', '0.05', '0.001', '0.975', '95%', '2.0.0', '3.11', '2.14.1', '0.29.1', '2.4.14', '1.14.5', '0.1.18', '1.1.1',
           '0.0.6', '2.7.0', '1.19.6'}


def prose(md: str) -> str:
    "Markdown without what is code or math: fenced blocks, inline code, $...$ and $$...$$."
    md = re.sub(r'```.*?```', '', md, flags=re.S)
    md = re.sub(r'`[^`\n]*`', '', md)
    md = re.sub(r'\$\$.*?\$\$', '', md, flags=re.S)
    return re.sub(r'\$[^$\n]*\$', '', md)


def measured(md: str) -> list:
    return [m for m in MEASURED.findall(prose(md)) if m.strip() not in ALLOWED]


def without_blocks(md: str) -> str:
    "Markdown without its generated blocks (between <!-- name --> and <!-- /name -->)."
    return re.sub(r'<!-- ([\w:]+) -->.*?<!-- /\1 -->', '', md, flags=re.S)


def readme_prose() -> str:
    "README.md without its generated blocks and its example block."
    return without_blocks((ROOT / 'README.md').read_text())


def notebooks():
    return sorted((ROOT / 'nbs').glob('*.ipynb'))


def markdown_cells(nb: Path) -> str:
    "A notebook's markdown, without the generated blocks that `make readme` fills into the front page's markers."
    return without_blocks(markdown_of(nb))


def saved_outputs(nb: Path) -> str:
    "Every text a notebook's saved outputs show: streams, plain text and markdown."
    out = []
    for c in json.loads(nb.read_text())['cells']:
        for o in c.get('outputs', []):
            out.append(''.join(o.get('text', '')))
            for k in ('text/plain', 'text/markdown', 'text/html'): out.append(''.join(o.get('data', {}).get(k, '')))
    return '\n'.join(out)


def test_the_pattern_finds_what_it_should():
    found = measured('took 4.3 s, 80% of a step; 1.47x faster; 2.3x; chance is ln 10 = 2.303; `0.961` in code; $0.5$ math; '
                     'lambda 0.1; PyTorch 2.14.1; 95% CI; 25 seeds x 2,000 steps; 10-30 s; 3,000 windows')
    assert found == ['4.3 s', '80%', '1.47x', '2.3x', '2.303', '10-30 s'], found


def test_the_readme_prose_has_no_typed_measurement():
    assert measured(readme_prose()) == []


@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.stem)
def test_a_chapter_markdown_has_no_typed_measurement(nb):
    assert measured(markdown_cells(nb)) == []


def shown_in(number: str, text: str) -> bool:
    "Is `number` (as the decisions write it) in `text` as a number of its own, not as part of a longer one?"
    n = re.escape(number.replace(',', '').replace(' ', ''))
    return re.search(rf'(?<![\d.]){n}(?![\d])', text.replace(',', '')) is not None


def test_the_decisions_quote_only_numbers_that_a_chapter_shows():
    shown = '\n'.join(saved_outputs(nb) for nb in notebooks())
    assert shown_in('0.940', 'mean 0.940 at') and not shown_in('0.94', 'mean 0.940') and not shown_in('76%', '1,076%')
    missing = [m for m in measured((ROOT / 'nbs' / 'decisions.md').read_text()) if not shown_in(m, shown)]
    assert missing == [], f'quoted in nbs/decisions.md but shown by no chapter: {missing}'
