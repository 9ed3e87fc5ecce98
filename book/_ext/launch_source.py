"""A Sphinx extension: launch buttons that open the notebook a page was made from.

The book's notebook pages are papermill's executed copies under book/_generated/, which are not in the repository.
sphinx-book-theme points its launch buttons (Binder) at the page's own path; this extension points them at the
source in notebooks/ instead: book/_generated/NAME.ipynb opens notebooks/NAME.ipynb, and a run page
(book/_generated/train/RUN.ipynb) opens notebooks/train.ipynb. It runs after the theme has made the buttons."""
import re

GENERATED = re.compile(r"book/_generated/(?:(train)/[^/?#]+|([^/?#]+))\.ipynb")


def source_of(url: str) -> str:
    """A launch URL with the executed copy's path replaced by its notebook's."""
    return GENERATED.sub(lambda m: f"notebooks/{m.group(1) or m.group(2)}.ipynb", url)


def _retarget(app, pagename, templatename, context, doctree):
    for group in context.get("header_buttons") or []:
        if group.get("label") == "launch-buttons":
            for button in group.get("buttons", []):
                if "url" in button:
                    button["url"] = source_of(button["url"])


def setup(app):
    app.connect("html-page-context", _retarget, priority=502)  # after the theme's add_launch_buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
