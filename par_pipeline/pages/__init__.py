"""Pages to look at: report.html (`par report`) and tracks.html (`par track`), rendered from data by Jinja2
templates into one self-contained file each (inline SVG charts, embedded thumbnails, a small inline script)."""
