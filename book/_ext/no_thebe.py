"""A Sphinx extension: no Thebe configuration on the book's pages while `launch_buttons.thebe` is off.

jupyter-book 1.x always loads sphinx-thebe, and sphinx-thebe writes a Binder configuration into every page, for a
sample repository (binder-examples/jupyter-stacks-datascience) when the book names none. This book has no Thebe
button, so that configuration would only point readers' browsers at somebody else's project: this extension takes
sphinx-thebe's page handler off before any page is written."""


def _drop_thebe(app, *_):
    if (app.config.html_theme_options or {}).get("launch_buttons", {}).get("thebe"):
        return
    for listener in list(app.events.listeners.get("doctree-resolved", [])):
        if getattr(listener.handler, "__module__", "").startswith("sphinx_thebe"):
            app.disconnect(listener.id)


def setup(app):
    app.connect("builder-inited", _drop_thebe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
