"""MkDocs hook: give the API reference the installed package's layout. `setup.py` maps the repository's folders into
one package, `lm4lv` (`PACKAGE_DIRS`); mkdocstrings reads source files, so this builds that package as a tree of
links under `build/api-source` (read by `mkdocs.yml`'s `paths`) before the pages are rendered."""

import ast
import os

ROOT = os.path.dirname(os.path.abspath(__file__))
API_SOURCE = os.path.join(ROOT, "build", "api-source")


def package_dirs() -> dict[str, str]:
    """`setup.py`'s `PACKAGE_DIRS` (package -> repository folder), read without running `setup()`."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGE_DIRS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("setup.py has no PACKAGE_DIRS")


def link_package_tree(target: str = API_SOURCE):
    """Link every file of every mapped folder to where the installed package has it."""
    for package, folder in package_dirs().items():
        destination = os.path.join(target, *package.split("."))
        os.makedirs(destination, exist_ok=True)
        for name in os.listdir(os.path.join(ROOT, folder)):
            source = os.path.join(ROOT, folder, name)
            link = os.path.join(destination, name)
            if name.endswith(".py") and not os.path.lexists(link):
                os.symlink(source, link)


def on_startup(command, dirty):
    link_package_tree()
