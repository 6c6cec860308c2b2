"""Interactive, self-contained HTML page of one or more 2-D views.

Points are drawn on a ``<canvas>`` by a few lines of inline JavaScript (no CDN,
no network: the page opens from disk anywhere). Hovering a point shows its
label, path and, for the points given a thumbnail, the image itself (inline
base64). Clicking a legend entry hides/shows that class in every panel.
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
.panels{display:flex;flex-wrap:wrap;gap:16px}.panel h2{font-size:1em;margin:.2em 0}.panel .m{font-size:.85em;color:#555}
canvas{border:1px solid #ccc;cursor:crosshair}#tip{position:fixed;display:none;background:#fff;border:1px solid #888;
padding:4px;font-size:11px;max-width:260px;word-wrap:break-word;pointer-events:none;box-shadow:2px 2px 6px #0003}
#tip img{display:block;max-width:128px;max-height:128px}.legend{columns:4 12em;font-size:12px;margin-top:1em}
.legend span{cursor:pointer;display:block;user-select:none}.legend span.off{opacity:.3}
.legend i{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}"""

_JS = """const D=JSON.parse(document.getElementById('data').textContent);const hidden=new Set();
const tip=document.getElementById('tip');const S=560,P=12;
function draw(p){const c=p.cv.getContext('2d');c.clearRect(0,0,S,S);const r=p.pts.length>5000?1.5:3;
for(const q of p.pts){if(hidden.has(q[2]))continue;c.fillStyle=q[2]<0?'#4477aa':D.colours[q[2]];
c.beginPath();c.arc(q[0],q[1],r,0,6.2832);c.fill();}}
D.panels.forEach((p,k)=>{p.cv=document.getElementById('cv'+k);
let x0=Infinity,x1=-Infinity,y0=Infinity,y1=-Infinity;for(const q of p.xy){x0=Math.min(x0,q[0]);x1=Math.max(x1,q[0]);
y0=Math.min(y0,q[1]);y1=Math.max(y1,q[1]);}const s=(S-2*P)/Math.max(x1-x0,y1-y0,1e-9);
p.pts=p.xy.map(q=>[P+(q[0]-x0)*s,S-P-(q[1]-y0)*s,q[2],q[3]]);draw(p);
p.cv.addEventListener('mousemove',e=>{const b=p.cv.getBoundingClientRect(),mx=e.clientX-b.left,my=e.clientY-b.top;
let best=-1,bd=64;p.pts.forEach((q,i)=>{if(hidden.has(q[2]))return;const d=(q[0]-mx)**2+(q[1]-my)**2;if(d<bd){bd=d;best=i;}});
if(best<0){tip.style.display='none';return;}const q=p.pts[best];tip.textContent='';
if(q[3]>=0){const im=document.createElement('img');im.src=D.thumbs[q[3]];tip.appendChild(im);}
const t=document.createElement('div');t.textContent=(q[2]>=0?D.names[q[2]]+' \\u2014 ':'')+p.paths[best];tip.appendChild(t);
tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+14)+'px';tip.style.display='block';});
p.cv.addEventListener('mouseleave',()=>{tip.style.display='none';});});
document.querySelectorAll('.legend span').forEach(el=>el.addEventListener('click',()=>{const c=+el.dataset.c;
if(hidden.has(c)){hidden.delete(c);el.classList.remove('off');}else{hidden.add(c);el.classList.add('off');}
D.panels.forEach(draw);}));"""


def write_view_html(path, panels: Sequence[ViewPanel], *, thumbnails: int = 300, thumb_px: int = 96, seed: int = 0,
                    title: str = "embedkit view") -> Path:
    """Write the page for ``panels`` atomically; ``thumbnails`` points per panel (spread over the map) get an image."""
    from embedkit.render.gallery import thumbnail_data_uri

    labelled = [np.asarray(p.labels, dtype=str) for p in panels if p.labels is not None]
    names = sorted(set(np.concatenate(labelled).tolist())) if labelled else []
    colours = palette(names)
    code = {n: i for i, n in enumerate(names)}
    thumbs: list[str] = []
    data_panels = []
    for p in panels:
        xy = np.asarray(p.xy, np.float64)
        n = len(xy)
        paths = [str(s) for s in p.paths] if p.paths is not None else [""] * n
        cls = [code[str(v)] for v in p.labels] if p.labels is not None else [-1] * n
        tid = np.full(n, -1, np.int64)
        if thumbnails and p.paths is not None:
            for i in spread_sample(xy, thumbnails, seed):
                tid[i] = len(thumbs)
                thumbs.append(thumbnail_data_uri(paths[i], thumb_px))
        pts = [[round(float(a), 4), round(float(b), 4), c, int(t)] for (a, b), c, t in zip(xy, cls, tid)]
        data_panels.append({"xy": pts, "paths": paths})
    data = {"names": names, "colours": [colours[n] for n in names], "thumbs": thumbs, "panels": data_panels}
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><div class='panels'>"]
    for k, p in enumerate(panels):
        out.append(f"<div class='panel'><h2>{html.escape(p.title)}</h2>"
                   f"<div class='m'>{html.escape(metrics_line(p.metrics)) or '&nbsp;'}</div>"
                   f"<canvas id='cv{k}' width='560' height='560'></canvas></div>")
    out.append("</div><div class='legend'>")
    for i, n in enumerate(names):
        out.append(f"<span data-c='{i}'><i style='background:{colours[n]}'></i>{html.escape(n)}</span>")
    out.append(f"</div><div id='tip'></div><script type='application/json' id='data'>{blob}</script>"
               f"<script>{_JS}</script></body></html>")
    return write_text_atomic(path, "\n".join(out))
