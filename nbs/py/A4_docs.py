# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the README and the documentation site
#
# > The README generated from `index.ipynb` and the committed results; an offline documentation site from the executed notebooks.

# %% [markdown]
# `index.ipynb` is the project's front page. The README is made from it (nbdev's own `nbdev_readme`
# renders with Quarto, which cannot be installed without internet access to its binary), and so is
# the front page of the documentation site. Wherever the front page shows a result, it holds only a
# marker, `<!-- name -->` followed by `<!-- /name -->`, and the generator fills the marker from a
# committed file that committed code wrote from committed results:
#
# | marker | filled from | written by |
# |---|---|---|
# | `answer` | `outputs/figure1/paper/answer.md` | `python -m metaguard_nb.figure report --preset paper` (from `outputs/results/`) |
# | `figure:paper` | `outputs/figure1/paper/figure1.png` | the same command |
# | `robustness` | `outputs/robustness/summary.md` | `python -m metaguard_nb.robustness summary` (from `outputs/results/`) |
#
# A test checks that the committed README equals what this chapter generates, and that each filled
# file equals what its command makes from the committed results; another fails on a measured number
# typed into the README's prose or a chapter's markdown (`tests/test_numbers.py`). The README is a front
# page: the evidence behind each number is in the chapter that computes it (the full report in
# [04_figure1](04_figure1.ipynb), the ablation in [03c_ablation](03c_ablation.ipynb), the speed in
# [A3_bench](A3_bench.ipynb)).
#
# The front page's own links are written relative to `nbs/`, where it lives, so that they open in
# JupyterLab and on the site; `root_links` rewrites them for the README, which lives at the root.
# `make readme` fills the markers of `index.ipynb` too (`front_page`, links relative to `nbs/`), so a
# reader who opens it in JupyterLab sees the answer where the README shows it.

# %%
#| default_exp docs

# %%
#| export
import argparse, importlib, inspect, json, re, shutil, subprocess, sys
from pathlib import Path

from IPython.display import Markdown
from nbdev.showdoc import show_doc

from metaguard_nb.data import checkout

# %%
from fastcore.test import test_eq, test_fail


# %% [markdown]
# ## The README

# %%
#| export
def _root() -> Path: return checkout() or Path.cwd()

def blocks(root:Path|None=None, # the checkout (default: this one)
          )->dict:
    "The generated blocks of the front page, by marker name, each from its committed file."
    root = root or _root()
    paper = root/'outputs'/'figure1'/'paper'
    out = {'answer': (paper/'answer.md').read_text() if (paper/'answer.md').exists() else
                     '(no paper-protocol results yet: `make figure1-all PRESET=paper`)\n'}
    img = paper/'figure1.png'  # linked only where it exists, so the page never shows a missing image
    out['figure:paper'] = f'![Figure 1, paper protocol]({img.relative_to(root).as_posix()})\n' if img.exists() else '(no figure yet)\n'
    f = root/'outputs'/'robustness'/'summary.md'
    out['robustness'] = f.read_text() if f.exists() else '(the robustness study has not written its summary yet: `python -m metaguard_nb.robustness summary`)\n'
    return out

def fill(text:str, # the front page with its markers
         filled:dict, # each marker's new body, by marker name (`blocks`)
        )->str:
    "Put each block between its markers `<!-- name -->` ... `<!-- /name -->` (whatever stood there before is replaced)."
    for name, body in filled.items():
        a, b = f'<!-- {name} -->', f'<!-- /{name} -->'
        if a in text and b in text: text = text[:text.index(a) + len(a)] + '\n' + body + text[text.index(b):]
    return text

def notebook_markdown(nb:Path, # a notebook file
                     )->str:
    "A notebook as markdown: markdown cells as they are, code cells as python blocks (no outputs)."
    cells = json.loads(Path(nb).read_text())['cells']
    parts = []
    for c in cells:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

LINK = r'\]\((?![a-z]+:|#|/)([^)\s]+)\)'  # the target of a relative markdown link or image (not a URL, an anchor or an absolute path)

def root_links(md:str, # markdown whose links and images are relative to nbs/ (as JupyterLab and the site resolve the front page's)
              )->str:
    "The same markdown with each relative link and image relative to the repository's root, as README.md needs them."
    return re.sub(LINK, lambda m: '](' + (m[1][3:] if m[1].startswith('../') else 'nbs/' + m[1]) + ')', md)

def nbs_links(md:str, # markdown whose links and images are relative to the repository's root (the generated blocks)
             )->str:
    "The same markdown with each relative link and image relative to nbs/, where the front page lives: `root_links` undone."
    return re.sub(LINK, lambda m: '](' + (m[1][4:] if m[1].startswith('nbs/') else '../' + m[1]) + ')', md)

def readme(root:Path|None=None, # the checkout (default: this one)
          )->str:
    "README.md's text: index.ipynb as markdown, its markers filled from the committed results."
    root = root or _root()
    head = '<!-- Generated from nbs/index.ipynb and the committed results by `make readme`; edit those, not this file. -->\n\n'
    return head + fill(root_links(notebook_markdown(root/'nbs'/'index.ipynb')), blocks(root))

def front_page(root:Path|None=None, # the checkout (default: this one)
               nb:dict|None=None, # the front page as a notebook (default: the checkout's nbs/index.ipynb)
              )->dict:
    "The front page with its markers filled from the committed files, links relative to nbs/: as JupyterLab opens it, and the site shows it."
    root = root or _root()
    nb = nb or json.loads((root/'nbs'/'index.ipynb').read_text())
    filled = {k: nbs_links(v) for k, v in blocks(root).items()}
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': c['source'] = fill(''.join(c['source']), filled).splitlines(True)
    return nb

def write_readme(root:Path|None=None, # the checkout (default: this one)
                )->Path:
    "Write README.md (`readme`'s text) and fill index.ipynb's markers (`front_page`; its text copy in nbs/py follows); the one place that writes them (`make readme`, `figure report`)."
    root = root or _root()
    (root/'README.md').write_text(readme(root))
    ipynb, text = root/'nbs'/'index.ipynb', json.dumps(front_page(root), sort_keys=True, indent=1, ensure_ascii=False) + '\n'  # nbdev_clean's layout
    if text != ipynb.read_text():
        ipynb.write_text(text)
        import jupytext  # a development tool (requirements.txt), needed only where a checkout's front page has changed
        (root/'nbs'/'py'/'index.py').write_text(jupytext.writes(jupytext.read(ipynb), fmt='py:percent'))
    return root/'README.md'


# %%
test_eq(fill('a <!-- x -->old<!-- /x --> b', {'x': 'new\n'}), 'a <!-- x -->\nnew\n<!-- /x --> b')
test_eq(fill('no markers', {'x': 'new'}), 'no markers')
_md = '[a](03_guards.ipynb) ![f](../outputs/x.png) [w](https://x.org) [s](#sec) `f(x)`'
test_eq(root_links(_md), '[a](nbs/03_guards.ipynb) ![f](outputs/x.png) [w](https://x.org) [s](#sec) `f(x)`')
test_eq(nbs_links(root_links(_md)), _md)

# %% [markdown]
# ## The documentation site
#
# `make docs` builds a static site from the executed notebooks with Sphinx and myst-nb (from PyPI;
# pinned in `requirements-docs.txt`), math typeset by MathJax from the npm registry (copied into the
# site, so pages render without a network), outputs as saved in the notebooks (nothing is executed).
# The site goes to `_docs/`; open `_docs/index.html`. A link to a file outside `nbs/` (the figure's
# report) becomes MyST's download link, so the site carries a copy of the file; Sphinx would
# otherwise read it as a cross-reference to a page it does not have, and show the link as plain text.

# %%
#| export
MATHJAX = 'mathjax@3.2.2'  # from the npm registry; the site serves its own copy

def _mathjax(tools:Path) -> Path:
    "MathJax's es5 folder, installed once with npm under `tools`."
    es5 = tools/'node_modules'/'mathjax'/'es5'
    if not es5.exists():
        if not shutil.which('npm'): raise RuntimeError('npm is needed once to fetch MathJax for the docs: install Node.js and npm')
        subprocess.run(['npm', 'install', '--prefix', str(tools), '--no-audit', '--no-fund', '--silent', MATHJAX], check=True)
    return es5

CONF = """
project = 'metaguard_nb'
extensions = ['myst_nb']
myst_enable_extensions = ['dollarmath', 'amsmath']
nb_execution_mode = 'off'
html_theme = 'furo'
html_title = 'metaguard_nb: Meta Guard, a literate reference implementation'
html_static_path = ['_static']
mathjax_path = 'mathjax/tex-chtml.js'
exclude_patterns = ['_build', 'py', '**.ipynb_checkpoints']
suppress_warnings = ['mystnb.unknown_mime_type', 'myst.header', 'misc.highlighting_failure']
"""

def _without_directives(c:dict) -> str:
    "A cell's source without nbdev's directive lines (`#| export`, `#| echo: false`, ...): they are for the tools, not the reader."
    return ''.join(l for l in ''.join(c['source']).splitlines(True) if not l.startswith('#|'))

def _download_links(md:str) -> str:
    "Links (not images) to files outside nbs/ as MyST's `{download}` role: Sphinx copies the file into the site, where a plain link would be an unresolved cross-reference, shown as text."
    download = lambda m: '{download}`' + m[1] + ' <' + m[2] + '>`' if m[2].startswith('../') else m[0]
    return re.sub(r'(?<!!)\[([^\]`]*)' + LINK, download, md)  # LINK: the relative targets

def site(out:Path|None=None, # the site folder (default: _docs/)
         root:Path|None=None, # the checkout (default: this one)
        )->Path:
    "Build the documentation site into `out` (default _docs/); return the path of its front page."
    root = root or _root()
    out, src = Path(out or root/'_docs'), root/'_docs_src'
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(root/'nbs', src, ignore=shutil.ignore_patterns('py', '.ipynb_checkpoints'))
    index = front_page(root, json.loads((src/'index.ipynb').read_text()))
    chapters = [p.stem for p in sorted(src.glob('*.ipynb')) if p.stem != 'index'] + ['decisions']
    index['cells'].append(dict(cell_type='markdown', id='toctree', metadata={}, source='```{toctree}\n:maxdepth: 1\n:caption: Chapters\n\n' + '\n'.join(chapters) + '\n```\n'))
    (src/'index.ipynb').write_text(json.dumps(index))
    for nb in src.glob('*.ipynb'):
        d = json.loads(nb.read_text())
        for c in d['cells']:
            if c['cell_type'] == 'markdown': c['source'] = _download_links(''.join(c['source']))
            if c['cell_type'] != 'code': continue  # nbdev's directives (#| export, ...) are for the tools, not the reader
            if '#| echo: false' in ''.join(c['source']): c['metadata']['tags'] = ['remove-input']  # the output alone, as nbdev shows it
            c['source'] = _without_directives(c)
        d['cells'] = [c for c in d['cells'] if c['cell_type'] != 'code' or c['source'].strip()]
        nb.write_text(json.dumps(d))
    (src/'conf.py').write_text(CONF)
    shutil.copytree(_mathjax(root/'.docs_tools'), src/'_static'/'mathjax')
    subprocess.run([sys.executable, '-m', 'sphinx', '-q', '-b', 'html', str(src), str(out)], check=True)
    shutil.rmtree(src)
    return out/'index.html'


# %%
test_eq(_download_links('[r](../outputs/r.md) ![f](../outputs/f.png) [c](03_guards.ipynb) [d](decisions.md)'),
        '{download}`r <../outputs/r.md>` ![f](../outputs/f.png) [c](03_guards.ipynb) [d](decisions.md)')


# %% [markdown]
# ## The API reference
#
# Every chapter that exports a module ends with its API reference: nbdev's `show_doc` of each public
# name (and of each public method a class defines), parameters and their docments as the code states
# them. The reference is a saved output, so JupyterLab and the site show it without running the
# chapter; `make sync` rewrites it from the exported code (nothing else is executed), and a test fails
# when a saved reference differs from what the code renders now.

# %%
#| export
def api_objects(module:str, # an exported module's name, e.g. 'guards'
               )->list:
    "The public functions and classes of `metaguard_nb.<module>` (its `__all__`), each class followed by the public methods it defines."
    mod = importlib.import_module(f'metaguard_nb.{module}')
    out = []
    for name in getattr(mod, '__all__', []):
        o = getattr(mod, name)
        if not (inspect.isfunction(o) or inspect.isclass(o)): continue
        out.append(o)
        if inspect.isclass(o):
            out += [v for k, v in vars(o).items() if inspect.isfunction(v) and not k.startswith('_') and v.__module__ == mod.__name__]
    return out

def api_markdown(module:str, # an exported module's name, e.g. 'guards'
                )->str:
    "The module's API reference as markdown: `show_doc` of each of `api_objects`."
    render = lambda o: show_doc(o, title_level=3)._repr_markdown_().strip().removeprefix('---').strip() + '\n'  # headings part them; no rules
    return '\n'.join(render(o) for o in api_objects(module))

def api_reference(module:str, # an exported module's name, e.g. 'guards'
                 ):
    "The chapter's last cell: its module's API reference, displayed as markdown."
    return Markdown(api_markdown(module))


# %%
#| export
def _api_cells(d:dict) -> list:
    "The cells of a notebook (as json) that display an API reference, with their module's name."
    out = []
    for c in d['cells']:
        src = _without_directives(c).strip()
        m = re.fullmatch(r"api_reference\('(\w+)'\)", src) if c['cell_type'] == 'code' else None
        if m: out.append((c, m.group(1)))
    return out

def _chapters(root:Path|None):
    "Each notebook of the checkout: (path, its json, its API reference cells)."
    for nb in sorted(((root or _root())/'nbs').glob('*.ipynb')):
        d = json.loads(nb.read_text())
        yield nb, d, _api_cells(d)

def refresh_api(root:Path|None=None, # the checkout (default: this one)
               )->list:
    "Write each chapter's API reference into its saved output (nothing else is run); returns the notebooks changed."
    changed = []
    for nb, d, cells in _chapters(root):
        for c, module in cells:
            c['outputs'] = [dict(output_type='display_data', metadata={}, data={'text/markdown': api_markdown(module).splitlines(True),
                                                                              'text/plain': ['<IPython.core.display.Markdown object>']})]
            c['execution_count'] = None
        new = json.dumps(d, sort_keys=True, indent=1, ensure_ascii=False) + '\n'  # nbdev's own layout
        if cells and new != nb.read_text(): nb.write_text(new); changed.append(nb)
    return changed

def stale_api(root:Path|None=None, # the checkout (default: this one)
             )->list:
    "The chapters whose saved API reference differs from what the code renders now (empty when all are current)."
    out = []
    for nb, _, cells in _chapters(root):
        for c, module in cells:
            saved = ''.join(''.join(o.get('data', {}).get('text/markdown', [])) for o in c.get('outputs', []))
            if saved != api_markdown(module): out.append(f'{nb.name} ({module})')
    return out


# %%
test_eq(api_objects('persist')[0].__name__, 'atomic_write')
assert 'path:Path, # the file to write' in api_markdown('persist')  # the docments, as the code states them
test_eq([m for _, m in _api_cells({'cells': [dict(cell_type='code', source="#| echo: false\napi_reference('guards')"), dict(cell_type='code', source='x = 1')]})], ['guards'])


# %%
#| export
def main(argv=None, # command-line arguments (default: the process arguments)
        ):
    "python -m metaguard_nb.docs readme|site|api"
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.docs')
    ap.add_argument('what', choices=['readme', 'site', 'api'])
    a = ap.parse_args(argv)
    if a.what == 'readme': print('wrote', write_readme())
    elif a.what == 'api': print('API references rewritten:', ', '.join(p.name for p in refresh_api()) or 'none (all current)')
    else: print('site:', site())

if __name__ == '__main__' and not hasattr(__import__('builtins'), '__IPYTHON__'): main()  # not when a notebook runs this cell

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.docs`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
#| echo: false
api_reference('docs')
