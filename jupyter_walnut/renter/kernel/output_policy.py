"""What a provider's kernel may show in the renter's Jupyter clients.

JupyterLab, Notebook 7 and VS Code treat the outputs of a cell the user ran as trusted: HTML
runs its scripts and event handlers in the renter's Jupyter origin, where they can read the
`_xsrf` cookie and drive the renter's own server API. A Walnut kernel runs on a provider who
controls every byte it sends, so its outputs are reduced to inert content before any client
sees them: an allowlist of MIME types, HTML and SVG cleaned to passive markup, and the widget
state keys that ipywidgets renders as HTML cleaned the same way.

`sanitize(msg_type, content)` is pure and returns `content` itself when nothing had to change
(callers then forward the original bytes); `OutputPolicy` adds the one thing that needs
memory, which widget model each comm is.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from typing import Any
from xml.etree.ElementTree import Element, register_namespace, tostring

import mistune
import nh3
from defusedxml import ElementTree as SafeET

# --- MIME types ------------------------------------------------------------------------

PASSIVE_TEXT = {"text/plain", "text/latex", "application/json"}
IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
HTML, MARKDOWN, SVG = "text/html", "text/markdown", "image/svg+xml"
ALLOWED = PASSIVE_TEXT | IMAGES | {WIDGET_VIEW, HTML, MARKDOWN, SVG}

# messages whose content this module reads; every other type is relayed untouched
DISPLAY_TYPES = {"display_data", "execute_result", "update_display_data"}
POLICY_TYPES = DISPLAY_TYPES | {"execute_reply", "inspect_reply", "kernel_info_reply",
                                "comm_open", "comm_msg"}

# --- HTML: close to JupyterLab's own sanitizer, without forms, media or <style> ----------

HTML_TAGS = {
    "a", "abbr", "acronym", "address", "article", "aside", "b", "bdi", "bdo", "big",
    "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del",
    "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1",
    "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "i", "img", "ins", "kbd", "li",
    "mark", "nav", "ol", "p", "pre", "q", "rp", "rt", "ruby", "s", "samp", "section", "small",
    "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th",
    "thead", "time", "tr", "tt", "u", "ul", "var", "wbr",
}
GLOBAL_ATTRS = {"class", "dir", "hidden", "id", "lang", "style", "title"}
HTML_ATTRS = {
    "*": GLOBAL_ATTRS,
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "table": {"border", "cellpadding", "cellspacing", "width", "align"},
    "td": {"colspan", "rowspan", "align", "valign", "width"},
    "th": {"colspan", "rowspan", "align", "valign", "width", "scope"},
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "ol": {"start", "type"}, "font": {"color", "size", "face"}, "details": {"open"},
}
# styling without overlays (no position or z-index) and without url()-bearing properties
STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "text-align", "text-decoration", "text-indent", "vertical-align",
    "white-space", "word-break", "line-height", "letter-spacing", "border", "border-top",
    "border-bottom", "border-left", "border-right", "border-color", "border-style",
    "border-width", "border-collapse", "border-spacing", "border-radius", "padding",
    "padding-top", "padding-bottom", "padding-left", "padding-right", "margin", "margin-top",
    "margin-bottom", "margin-left", "margin-right", "width", "height", "max-width",
    "max-height", "min-width", "min-height", "display", "overflow", "overflow-x", "overflow-y",
    "text-overflow", "table-layout",
}
DROP_WITH_CONTENT = {"script", "style", "template", "noscript", "iframe", "object", "embed",
                     "svg", "math", "textarea", "select", "title"}
IMAGE_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[a-z0-9+/=\s]*\Z", re.I)
WEB_URL = re.compile(r"(https?|mailto):", re.I)
# MathJax typesets HTML and LaTeX outputs; its \href must not become a javascript: link
TEX_HREF = re.compile(r"\\href\s*\{\s*([^}]*)\}")
ID_PREFIX = "walnut-output-"  # ids cannot clobber the page's globals (window.<id>)


def _html_attribute(element: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if WEB_URL.match(value.strip()) else None
    if attribute == "src":
        value = value.strip()
        ok = re.match(r"https?:", value, re.I) or IMAGE_DATA_URL.match(value)
        return value if ok else None
    return value


def clean_html(source: str) -> str:
    cleaned = nh3.clean(
        source, tags=HTML_TAGS, clean_content_tags=DROP_WITH_CONTENT, attributes=HTML_ATTRS,
        attribute_filter=_html_attribute, url_schemes={"http", "https", "mailto", "data"},
        url_relative="deny", filter_style_properties=STYLE_PROPERTIES, id_prefix=ID_PREFIX,
        link_rel="noopener noreferrer nofollow")
    return _clean_tex(cleaned)


def _clean_tex(text: str) -> str:
    def check(m: re.Match) -> str:
        return m.group(0) if re.match(r"\s*https?:", m.group(1), re.I) else r"\href{#}"

    return TEX_HREF.sub(check, text)


def clean_text_or_html(value: str) -> str:
    """A string a client may show as text or as HTML: unchanged unless it carries markup
    that cleaning removes (so `a < b` in a label stays `a < b`)."""
    cleaned = clean_html(value)
    return value if cleaned == value or html.unescape(cleaned) == value else cleaned


_markdown = mistune.create_markdown(escape=False, plugins=["strikethrough", "table", "math"])


def markdown_to_html(source: str) -> str | None:
    """Markdown becomes cleaned HTML: raw HTML and link targets inside markdown cannot be
    cleaned in place without a parser, and JupyterLab typesets $math$ in HTML too."""
    try:
        return clean_html(str(_markdown(source)))
    except RecursionError:  # absurdly nested markdown: not shown
        return None


# --- SVG: an XML allowlist (nh3 drops xlink:href, which matplotlib's markers need) ---------

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
# serialize as <svg xmlns=...> and xlink:href, as browsers expect, instead of ns0:svg
register_namespace("", SVG_NS)
register_namespace("xlink", XLINK_NS)
SVG_TAGS = {
    "svg", "g", "defs", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon",
    "text", "tspan", "title", "desc", "use", "clipPath", "mask", "pattern", "linearGradient",
    "radialGradient", "stop", "symbol", "marker", "image", "metadata",
}
SVG_UNSAFE_VALUE = re.compile(r"javascript:|vbscript:|expression\(|@import|url\(\s*['\"]?(?!#)",
                              re.I)


def clean_svg(source: str) -> str | None:
    """The SVG with only passive elements and attributes, or None if it is not SVG XML."""
    try:
        root = SafeET.fromstring(source.encode())
        if not isinstance(root.tag, str) or _local(root.tag) != "svg":
            return None
        _clean_svg_element(root)
        return tostring(root, encoding="unicode")
    except (SafeET.ParseError, ValueError, RecursionError):
        return None  # entities, DTDs, malformed or absurdly deep XML: not shown


def _local(tag: str) -> str | None:
    """The SVG element's name; None for anything outside the SVG namespace."""
    prefix = "{" + SVG_NS + "}"
    return tag[len(prefix):] if tag.startswith(prefix) else None


def _clean_svg_element(element: Element) -> None:
    for child in list(element):
        if not isinstance(child.tag, str) or _local(child.tag) not in SVG_TAGS:
            element.remove(child)
        else:
            _clean_svg_element(child)
    for name, value in list(element.attrib.items()):
        local = name.rsplit("}", 1)[-1].lower()
        if local == "href":  # same-document references only, or an embedded raster image
            ok = value.startswith("#") or bool(
                _local(element.tag) == "image" and IMAGE_DATA_URL.match(value.strip()))
        else:  # no event handlers, no xml:base, no external or script URLs in values
            ok = (not local.startswith("on") and local != "base"
                  and not SVG_UNSAFE_VALUE.search(value))
        if not ok:
            del element.attrib[name]


# --- MIME bundles -----------------------------------------------------------------------


def clean_bundle(data: Any) -> Any:
    """A MIME bundle with only passive representations (the same object if all were)."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    dropped: list[str] = []
    converted = None
    for mime, value in data.items():
        if (mime not in ("application/json", WIDGET_VIEW) and isinstance(value, list)
                and all(isinstance(v, str) for v in value)):
            value = "".join(value)  # nbformat's multi-line strings
        cleaned = _clean_value(mime, value)
        if cleaned is None:
            dropped.append(str(mime))
        elif mime == MARKDOWN:
            converted = cleaned
        else:
            out[mime] = cleaned
    if converted is not None and HTML not in out:  # markdown shows as its cleaned HTML
        out[HTML] = converted
    if dropped and not out:
        out["text/plain"] = ("[Walnut: not shown, output types a provider may not send: "
                             + ", ".join(sorted(dropped)) + "]")
    return data if out == data else out


def _clean_value(mime: str, value: Any) -> Any:
    if mime not in ALLOWED:
        return None
    if mime == WIDGET_VIEW:
        return value if isinstance(value, dict) else None
    if mime == "application/json":
        return value
    if not isinstance(value, str):
        return None
    if mime == HTML:
        return clean_html(value)
    if mime == MARKDOWN:
        return markdown_to_html(value)
    if mime == SVG:
        return clean_svg(value)
    if mime == "text/latex":
        return _clean_tex(value)
    return value


# --- messages ---------------------------------------------------------------------------

# ipywidgets models whose `value` is put into the page as HTML (Label: typeset as text, but
# cleaned as well since older ipywidgets set it as HTML)
HTML_VALUE_MODELS = {"HTMLModel", "HTMLMathModel", "LabelModel"}
HTML_STATE_KEYS = ("description", "tooltip", "placeholder")  # HTML with description_allow_html


def clean_widget_state(state: Any, model_name: str | None) -> Any:
    """Widget state with its HTML-rendered keys cleaned; plain state is left as it is. An
    unknown model's `value` is cleaned too, which leaves any harmless text unchanged."""
    if not isinstance(state, dict):
        return state
    out = dict(state)
    keys = list(HTML_STATE_KEYS)
    if model_name is None or model_name in HTML_VALUE_MODELS:
        keys.append("value")
    for key in keys:
        if isinstance(out.get(key), str):
            out[key] = clean_text_or_html(out[key])
    if isinstance(out.get("outputs"), list):  # the Output widget renders these bundles
        out["outputs"] = [_clean_output(o) for o in out["outputs"]]
    return state if out == state else out


def _clean_output(output: Any) -> Any:
    if isinstance(output, dict) and "data" in output:
        return {**output, "data": clean_bundle(output["data"])}
    return output


def sanitize(msg_type: str, content: Any, widget_model: str | None = None) -> Any:
    """The content with only passive output left; the same object when nothing changed."""
    if not isinstance(content, dict) or msg_type not in POLICY_TYPES:
        return content
    out = dict(content)
    if msg_type in DISPLAY_TYPES or msg_type == "inspect_reply":
        if "data" in out:
            out["data"] = clean_bundle(out["data"])
    elif msg_type == "execute_reply" and isinstance(out.get("payload"), list):
        out["payload"] = [_clean_payload(p) for p in out["payload"]]
    elif msg_type == "kernel_info_reply" and isinstance(out.get("help_links"), list):
        # JupyterLab's Help menu opens these: a javascript: URL would run in its origin
        out["help_links"] = [h for h in out["help_links"] if isinstance(h, dict)
                             and re.match(r"https?://", str(h.get("url", "")), re.I)]
    elif msg_type in ("comm_open", "comm_msg") and isinstance(out.get("data"), dict):
        data = out["data"]
        if msg_type == "comm_open" and isinstance(data.get("state"), dict):
            # a model's type is fixed when the frontend creates it from comm_open; later
            # updates cannot change it, so they are judged by what comm_open said
            widget_model = str(data["state"].get("_model_name", ""))
        if "state" in data:
            state = clean_widget_state(data["state"], widget_model)
            if state is not data["state"]:
                out["data"] = {**data, "state": state}
    return content if out == content else out


def _clean_payload(payload: Any) -> Any:
    if isinstance(payload, dict) and payload.get("source") == "page" and "data" in payload:
        return {**payload, "data": clean_bundle(payload["data"])}
    return payload


class OutputPolicy:
    """`sanitize` for one kernel connection, remembering each widget comm's model name."""

    MAX_COMMS = 65536

    def __init__(self) -> None:
        self._models: OrderedDict[str, str] = OrderedDict()

    def sanitize(self, msg_type: str, content: Any) -> Any:
        model = None
        if msg_type in ("comm_open", "comm_msg", "comm_close") and isinstance(content, dict):
            comm_id = str(content.get("comm_id", ""))
            if msg_type == "comm_close":
                self._models.pop(comm_id, None)
                return content
            state = (content.get("data") or {}).get("state") \
                if isinstance(content.get("data"), dict) else None
            if msg_type == "comm_open" and isinstance(state, dict):
                self._models[comm_id] = str(state.get("_model_name", ""))
                while len(self._models) > self.MAX_COMMS:
                    self._models.popitem(last=False)
            model = self._models.get(comm_id)
        return sanitize(msg_type, content, model)
