"""Interactive, self-contained HTML page of one or more 2-D views.

Points are drawn on a ``<canvas>`` (sharp on HiDPI screens: sized by
``devicePixelRatio``) by a few lines of inline JavaScript (no CDN, no network: the
page opens from disk anywhere). Hovering a point shows its label, path and, for
the points given a thumbnail, the image itself (inline base64). Clicking a legend
entry hides/shows that class in every panel; the wheel zooms, dragging pans,
double-click resets; a search box highlights the points whose path or label
contains the text. A short hint on the page says so.

Size: every distinct image path is stored once (panels of a comparison refer to
it by number) and every thumbnail is embedded once, shared by all panels that
show that image. A point of a code store gets its thumbnail only when the file still has the
sha1 recorded for its row at embed time (``ViewPanel.sha1``); otherwise its tooltip says why no
image is shown instead of inlining whatever file the path names now. The JSON block is escaped for ``<``, ``>`` and ``&`` (as
``\\u003c``...), so no file name or label can end the script or open a comment.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from embedkit.atomic import write_text_atomic
from embedkit.view.plot import ViewPanel, metrics_line, palette, spread_sample

_CSS = """body{font-family:sans-serif;margin:1em;color:#222}h1{font-size:1.2em}
.hint{font-size:.85em;color:#555;margin:.3em 0 .6em}.bar{margin:.4em 0}.bar input{width:22em;padding:2px 4px}
.bar span{font-size:.85em;color:#555;margin-left:.6em}
.panels{display:flex;flex-wrap:wrap;gap:16px}.panel h2{font-size:1em;margin:.2em 0}.panel .m{font-size:.85em;color:#555}
canvas{border:1px solid #ccc;cursor:crosshair;width:560px;height:560px;touch-action:none}
canvas.drag{cursor:grabbing}#tip{position:fixed;display:none;background:#fff;border:1px solid #888;
padding:4px;font-size:11px;max-width:260px;word-wrap:break-word;pointer-events:none;box-shadow:2px 2px 6px #0003}
#tip img{display:block;max-width:128px;max-height:128px}#tip .ph{color:#777;font-style:italic}.legend{display:grid;column-gap:1.2em;row-gap:1px;align-content:start;font-size:12px;max-height:560px;overflow:auto;margin-top:3.2em}
.legend span{cursor:pointer;display:block;user-select:none}.legend span.off{opacity:.3}
.legend i{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}"""

#: legend entries per column (a column is about as tall as a map)
LEGEND_ROWS = 30

_HINT = ("Hover a point to see its image, label and path. Click a legend entry to hide or show a class. "
         "Scroll to zoom, drag to pan, double-click to reset. Search highlights paths or labels containing the text.")

_JS = """const D=JSON.parse(document.getElementById('data').textContent);const hidden=new Set();
const tip=document.getElementById('tip');const S=560,P=12;const dpr=window.devicePixelRatio||1;
let match=null;const lower=D.paths.map(s=>s.toLowerCase());
function shown(q){return !hidden.has(q[2]);}
function draw(p){const c=p.ctx;c.setTransform(dpr,0,0,dpr,0,0);c.clearRect(0,0,S,S);
const r=(p.pts.length>5000?1.5:3)*Math.min(Math.max(Math.sqrt(p.z),1),4);
const dot=(q,a)=>{c.globalAlpha=a;c.fillStyle=q[2]<0?'#4477aa':D.colours[q[2]];c.beginPath();
c.arc(p.tx+q[0]*p.z,p.ty+q[1]*p.z,r,0,6.2832);c.fill();};
for(const q of p.pts){if(shown(q))dot(q,match?0.12:1);}
if(match){c.strokeStyle='#000';c.lineWidth=1;for(const q of p.pts){if(shown(q)&&match(q)){dot(q,1);c.stroke();}}}
c.globalAlpha=1;}
function nearest(p,mx,my){let best=-1,bd=64;p.pts.forEach((q,i)=>{if(!shown(q))return;
const d=(p.tx+q[0]*p.z-mx)**2+(p.ty+q[1]*p.z-my)**2;if(d<bd){bd=d;best=i;}});return best;}
D.panels.forEach((p,k)=>{p.cv=document.getElementById('cv'+k);p.cv.width=S*dpr;p.cv.height=S*dpr;
p.ctx=p.cv.getContext('2d');p.z=1;p.tx=0;p.ty=0;
let x0=Infinity,x1=-Infinity,y0=Infinity,y1=-Infinity;for(const q of p.xy){x0=Math.min(x0,q[0]);x1=Math.max(x1,q[0]);
y0=Math.min(y0,q[1]);y1=Math.max(y1,q[1]);}const s=(S-2*P)/Math.max(x1-x0,y1-y0,1e-9);
p.pts=p.xy.map(q=>[P+(q[0]-x0)*s,S-P-(q[1]-y0)*s,q[2],q[3]]);draw(p);let drag=null;
const at=e=>{const b=p.cv.getBoundingClientRect();return [e.clientX-b.left,e.clientY-b.top];};
p.cv.addEventListener('wheel',e=>{e.preventDefault();const [mx,my]=at(e);const f=Math.exp(-e.deltaY*0.0015);
const z=Math.min(Math.max(p.z*f,0.5),200),g=z/p.z;p.tx=mx-(mx-p.tx)*g;p.ty=my-(my-p.ty)*g;p.z=z;draw(p);},{passive:false});
p.cv.addEventListener('mousedown',e=>{drag=at(e);p.cv.classList.add('drag');});
window.addEventListener('mouseup',()=>{drag=null;p.cv.classList.remove('drag');});
p.cv.addEventListener('dblclick',()=>{p.z=1;p.tx=0;p.ty=0;draw(p);});
p.cv.addEventListener('mousemove',e=>{const [mx,my]=at(e);
if(drag){p.tx+=mx-drag[0];p.ty+=my-drag[1];drag=[mx,my];draw(p);tip.style.display='none';return;}
const best=nearest(p,mx,my);if(best<0){tip.style.display='none';return;}const q=p.pts[best];tip.textContent='';
const t=D.tp[q[3]];if(t>=0){const s=D.thumbs[t];if(s.startsWith('data:image/png;base64,')){
const im=document.createElement('img');im.src=s;tip.appendChild(im);}else{const ph=document.createElement('div');
ph.className='ph';ph.textContent=s;tip.appendChild(ph);}}
const d=document.createElement('div');d.textContent=(q[2]>=0?D.names[q[2]]+' \\u2014 ':'')+D.paths[q[3]];tip.appendChild(d);
tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';tip.style.display='block';});
p.cv.addEventListener('mouseleave',()=>{tip.style.display='none';});});
document.querySelectorAll('.legend span').forEach(el=>el.addEventListener('click',()=>{const c=+el.dataset.c;
if(hidden.has(c)){hidden.delete(c);el.classList.remove('off');}else{hidden.add(c);el.classList.add('off');}
D.panels.forEach(draw);}));
const box=document.getElementById('search'),cnt=document.getElementById('count');
box.addEventListener('input',()=>{const t=box.value.trim().toLowerCase();
if(!t){match=null;cnt.textContent='';D.panels.forEach(draw);return;}
const cls=new Set(D.names.map((n,i)=>n.toLowerCase().includes(t)?i:-1).filter(i=>i>=0));
match=q=>cls.has(q[2])||lower[q[3]].includes(t);let n=0;D.panels.forEach(p=>{for(const q of p.pts)if(match(q))n++;});
cnt.textContent=n+' matching point'+(n===1?'':'s');D.panels.forEach(draw);});"""


def script_json(data) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e``, ``\\u0026``.

    Escaping only ``</`` is not enough: ``<!--<script`` in a file name switches an
    HTML parser into a state where the real ``</script>`` no longer ends the block.
    """
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def write_view_html(path, panels: Sequence[ViewPanel], *, thumbnails: int = 300, thumb_px: int = 96, seed: int = 0,
                    title: str = "embedkit view") -> Path:
    """Write the page for ``panels`` atomically; about ``thumbnails`` points per panel (spread over the map) get an image.

    Each distinct path is stored once and each distinct image embedded once: a point
    of another panel showing an image that already has a thumbnail reuses it. Points of a panel
    with ``sha1`` get an image only if the file still has that sha1, else a line saying why not.
    """
    data = _page_data(panels, thumbnails, thumb_px, seed)
    return write_text_atomic(path, _page(title, panels, data))


def _page_data(panels: Sequence[ViewPanel], thumbnails: int, thumb_px: int, seed: int) -> dict:
    """The page's JSON: class names and colours, each distinct path once, thumbnails, each panel's points."""
    from embedkit.render.gallery import NO_CHECKSUM, NOT_THIS_STORES, checked_thumbnail_data_uri, thumbnail_data_uri

    def thumb(k: int, i: int, paths) -> str:
        sha1 = panels[k].sha1
        if sha1 is None:  # files the caller named directly
            return thumbnail_data_uri(paths[i], thumb_px)
        uri = checked_thumbnail_data_uri(paths[i], sha1[i], thumb_px)
        return uri if uri is not None else (NOT_THIS_STORES if sha1[i] else NO_CHECKSUM)

    labelled = [np.asarray(p.labels, dtype=object).astype(str) for p in panels if p.labels is not None]
    names = sorted(set(np.concatenate(labelled).tolist())) if labelled else []
    colours = palette(names)
    code = {n: i for i, n in enumerate(names)}
    path_id: dict[str, int] = {}
    thumb_of: dict[int, int] = {}  # path id -> thumbnail number
    thumbs: list[str] = []
    data_panels = []
    for k_panel, p in enumerate(panels):
        xy = np.asarray(p.xy, np.float64)
        n = len(xy)
        paths = [str(s) for s in p.paths] if p.paths is not None else [""] * n
        pid = np.fromiter((path_id.setdefault(s, len(path_id)) for s in paths), np.int64, n)
        cls = [code[str(v)] for v in p.labels] if p.labels is not None else [-1] * n
        if thumbnails and p.paths is not None:
            have = sum(int(i) in thumb_of for i in pid)  # images another panel already embedded
            need = int(thumbnails) - have
            if need > 0:
                for i in spread_sample(xy, int(thumbnails), seed):
                    if need <= 0:
                        break
                    if int(pid[i]) not in thumb_of:
                        thumb_of[int(pid[i])] = len(thumbs)
                        thumbs.append(thumb(k_panel, int(i), paths))
                        need -= 1
                    elif not thumbs[thumb_of[int(pid[i])]].startswith("data:"):  # another store's row may check
                        uri = thumb(k_panel, int(i), paths)
                        if uri.startswith("data:"):
                            thumbs[thumb_of[int(pid[i])]] = uri
        pts = [[round(float(a), 4), round(float(b), 4), c, int(t)] for (a, b), c, t in zip(xy, cls, pid)]
        data_panels.append({"xy": pts})
    tp = [-1] * len(path_id)
    for i, t in thumb_of.items():
        tp[i] = t
    return {"names": names, "colours": [colours[n] for n in names], "paths": list(path_id), "tp": tp,
            "thumbs": thumbs, "panels": data_panels}


def _page(title: str, panels: Sequence[ViewPanel], data: dict) -> str:
    """The HTML text: header, search bar, one canvas per panel with its figures, the legend, data and script."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
           f"<div class='hint'>{html.escape(_HINT)}</div>",
           "<div class='bar'><input id='search' type='search' placeholder='search a path or label' "
           "aria-label='search a path or label'><span id='count'></span></div><div class='panels'>"]
    for k, p in enumerate(panels):
        m = metrics_line(p.metrics)
        mt = metrics_line(getattr(p, "metrics_test", None))
        line = html.escape(m) + (f"<br>test split: {html.escape(mt)}" if mt else "")
        out.append(f"<div class='panel'><h2>{html.escape(p.title)}</h2>"
                   f"<div class='m'>{line or '&nbsp;'}</div>"
                   f"<canvas id='cv{k}' width='560' height='560'></canvas></div>")
    # the legend is the last item of the panels' row: beside the maps (below them only on a narrow window)
    cols = 1 + len(data["names"]) // LEGEND_ROWS
    out.append(f"<div class='legend' style='grid-template-columns:repeat({cols},max-content)'>")
    for i, (n, colour) in enumerate(zip(data["names"], data["colours"])):
        out.append(f"<span data-c='{i}'><i style='background:{colour}'></i>{html.escape(n)}</span>")
    out.append(f"</div></div><div id='tip'></div><script type='application/json' id='data'>{script_json(data)}</script>"
               f"<script>{_JS}</script></body></html>")
    return "\n".join(out)
