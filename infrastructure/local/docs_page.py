"""The interactive API docs page, served offline.

Swagger UI's script and stylesheet come from the copy Powertools ships inside its
package (`aws_lambda_powertools/event_handler/openapi/swagger_ui/`), so the page works
with no internet access; it loads the document from `/openapi.json` and its
"Try it out" buttons call the local server.
"""

from __future__ import annotations

import functools
from importlib import resources

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
ASSETS = {
    f"{DOCS_PATH}/swagger-ui.css": ("swagger-ui.min.css", "text/css; charset=utf-8"),
    f"{DOCS_PATH}/swagger-ui-bundle.js": (
        "swagger-ui-bundle.min.js",
        "application/javascript; charset=utf-8",
    ),
}
_PACKAGE = "aws_lambda_powertools.event_handler.openapi.swagger_ui"

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Event registration API (local)</title>
  <link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui">Loading {OPENAPI_PATH} ...</div>
  <script src="{DOCS_PATH}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{OPENAPI_PATH}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "list",
      defaultModelsExpandDepth: 0,
      displayRequestDuration: true,
      tryItOutEnabled: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }});
  </script>
</body>
</html>
"""


@functools.cache
def asset(path: str) -> tuple[bytes, str] | None:
    """(content, content type) of a docs asset, or None when `path` is not one."""
    entry = ASSETS.get(path)
    if entry is None:
        return None
    filename, content_type = entry
    return resources.files(_PACKAGE).joinpath(filename).read_bytes(), content_type
