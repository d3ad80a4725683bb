"""webui: the Gradio visual debugger over inspector/ (sessions, handlers, page layout).

Dependency direction: app.py -> webui -> inspector -> minillama. The figures and HTML panels
themselves are pure functions in inspector/views; this package only wires them to a page.
"""
