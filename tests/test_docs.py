"""The documentation: every public name has a docstring and a reference page, docs/ keeps only files a page, the
site config or a test uses, every image a page shows names the command that made it, and no file of the project
narrates its own history. (The README's test command builds the site with `mkdocs build --strict`, which fails on
warnings and broken internal links.)"""

import os
import re

import pytest

import lm4lv

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPOSITORY, "docs")
# phrases of a lab notebook, not of a user's documentation
HISTORY = re.compile(r"\bsessions?\s+\d|\bsession's\b|\bthe issue\b|\bissue's\b|\bhonestly\b|\bcommit [0-9a-f]{7}|"
                     r"\bon a (?:slower|faster) day\b", re.IGNORECASE)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def docs_files() -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), DOCS) for root, _, names in os.walk(DOCS) for name in names)


def pages() -> dict[str, str]:
    return {name: read(os.path.join(DOCS, name)) for name in docs_files() if name.endswith(".md")}


@pytest.mark.parametrize("name", lm4lv.__all__)
def test_every_public_name_has_a_docstring_and_a_reference_page(name):
    obj = getattr(lm4lv, name)
    assert (obj.__doc__ or "").strip(), f"lm4lv.{name} has no docstring"
    reference = "".join(text for page, text in pages().items() if page.startswith("reference/"))
    assert f"::: {obj.__module__}.{obj.__qualname__}\n" in reference, f"lm4lv.{name} has no reference page"


def test_every_page_is_in_the_site_and_every_other_file_is_used():
    site_config = read(os.path.join(REPOSITORY, "mkdocs.yml"))
    texts = [*pages().values(), read(os.path.join(REPOSITORY, "README.md"))]
    texts += [read(os.path.join(REPOSITORY, "tests", name)) for name in os.listdir(os.path.join(REPOSITORY, "tests"))
              if name.endswith(".py")]
    for name in docs_files():
        if name.endswith(".md"):
            assert f": {name}\n" in site_config, f"docs/{name} is not in mkdocs.yml's nav"
        else:
            assert any(os.path.basename(name) in text for text in texts), f"nothing uses docs/{name}"


def test_every_image_a_page_shows_names_the_command_that_made_it():
    commands = ("lm4lv demo", "lm4lv degradations", "lm4lv ablate", "LM4LV_APP_SCREENSHOT",
                "lm4lv.research.pretrained_run", "lm4lv.research.photo_benchmark")
    for page, text in {**pages(), "README.md": read(os.path.join(REPOSITORY, "README.md"))}.items():
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
            assert any(command in text for command in commands), f"{page} shows {image} without its command"


def test_no_file_of_the_project_narrates_its_history():
    paths = [os.path.join(REPOSITORY, name) for name in ("README.md", "model_card.md", "mkdocs.yml", "setup.py")]
    paths += [os.path.join(DOCS, name) for name in docs_files() if name.endswith(".md")]
    for folder in ("lm4lv", "modeling_lm4lv", "processing", "pipelines", "trainers", "research", "metrics",
                   "benchmarks", "examples"):
        paths += [os.path.join(root, name) for root, _, names in os.walk(os.path.join(REPOSITORY, folder))
                  for name in names if name.endswith((".py", ".md", ".sh", ".yaml"))]
    for path in paths:
        for number, line in enumerate(read(path).splitlines(), 1):
            assert not HISTORY.search(line), f"{os.path.relpath(path, REPOSITORY)}:{number}: {line.strip()}"


def test_the_readmes_links_into_the_repository_exist():
    text = read(os.path.join(REPOSITORY, "README.md"))
    targets = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in link]
    assert len(targets) > 10
    for target in targets:
        assert os.path.exists(os.path.join(REPOSITORY, target)), f"README.md links to {target}, which does not exist"


def readme_docs_command() -> str:
    """The documentation build of the README's test command (the `mkdocs build ...` between its `&&`s)."""
    commands = [line for line in read(os.path.join(REPOSITORY, "README.md")).splitlines() if "python -m pytest" in line]
    return next(part.strip() for part in commands[0].split("&&") if part.strip().startswith("mkdocs build"))


def test_the_docs_build_of_the_readme_and_ci_fails_on_a_broken_link(tmp_path):
    import shutil
    import subprocess

    command = readme_docs_command()
    assert command in read(os.path.join(REPOSITORY, ".ci", "run")).splitlines()
    for name in ("mkdocs.yml", "mkdocs_hooks.py", "setup.py", "README.md", "CHANGELOG.md"):
        shutil.copy(os.path.join(REPOSITORY, name), tmp_path / name)
    for folder in ("docs", "lm4lv", "modeling_lm4lv", "processing", "pipelines", "trainers", "research", "metrics"):
        shutil.copytree(os.path.join(REPOSITORY, folder), tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.safetensors"))
    page = tmp_path / "docs" / "getting-started.md"
    page.write_text(page.read_text() + "\n[a page that is not there](no-such-page.md)\n")
    build = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode != 0, build.stdout + build.stderr
    assert "no-such-page.md" in build.stderr


# an absolute path of a machine (POSIX system folders, a Windows drive) inside a string
MACHINE_PATH = re.compile(r"(?<![\w.~/])/(?:root|home|work|tmp|Users|mnt|opt|var|srv|data)/|\b[A-Z]:\\\\")


def test_no_shipped_file_or_committed_record_holds_a_machine_path():
    shipped = os.path.join(REPOSITORY, "modeling_lm4lv", "pretrained")
    paths = [os.path.join(root, name) for root, _, names in os.walk(shipped) for name in names
             if name.endswith((".json", ".md", ".txt"))]
    paths += [os.path.join(DOCS, name) for name in docs_files() if name.endswith(".json")]  # the recorded results
    assert len(paths) > 30
    for path in paths:
        for number, line in enumerate(read(path).splitlines(), 1):
            assert not MACHINE_PATH.search(line), f"{os.path.relpath(path, REPOSITORY)}:{number}: {line.strip()}"


def test_every_results_page_shows_its_pictures_in_a_browser(browser, tmp_path):
    """The site built as the README builds it, opened in headless Chromium: every picture of every results page loads
    (a broken image has no natural width)."""
    import subprocess

    site = tmp_path / "site"
    command = readme_docs_command() + f" --site-dir {site}"
    subprocess.run(command, shell=True, cwd=REPOSITORY, check=True, capture_output=True)
    results = [name for name in docs_files() if name.startswith("results/") and name.endswith(".md")]
    shown = 0
    for page in results:
        browser.get((site / page.removesuffix(".md") / "index.html").as_uri())
        sizes = browser.execute_script(
            "return Array.from(document.images).map(image => [image.getAttribute('src'), image.naturalWidth])")
        assert all(width > 0 for _, width in sizes), f"{page}: broken pictures {[s for s, w in sizes if not w]}"
        shown += len(sizes)
    assert shown >= 5
