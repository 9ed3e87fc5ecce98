"""A Sphinx extension for a book made of some of the table of contents' pages (a profile's `pages`, such as the
class book of the multi-task chapter and the lab).

A page that is kept may link to one that is left out ("the Results chapter"). Sphinx would stop the build on that
dangling reference. For a page the build names as left out (the config value `ladnn_left_out`: docname -> title,
written by ladnn.pages.book_config), the link becomes the page's title marked "full book". Every other dangling
reference still fails the build."""
import posixpath

from docutils import nodes

LABEL = " (full book)"


def _target(node) -> str | None:
    target = node.get("reftarget", "")
    if node.get("reftype") != "doc" or not target:  # {doc} roles; MyST resolves its own Markdown links
        return None
    target = target.split("#", 1)[0]
    for suffix in (".md", ".ipynb"):
        target = target.removesuffix(suffix)
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(node.get("refdoc", "")), target))


def _missing(app, env, node, contnode):
    left_out = app.config.ladnn_left_out or {}
    docname = _target(node)
    if docname not in left_out:
        return None
    text = contnode.astext() if node.get("refexplicit") else left_out[docname]
    out = nodes.inline(classes=["left-out"])
    out += nodes.emphasis(text=text)
    out += nodes.inline(text=LABEL, classes=["left-out-label"])
    return out


def setup(app):
    app.add_config_value("ladnn_left_out", {}, "env")
    app.connect("missing-reference", _missing)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
