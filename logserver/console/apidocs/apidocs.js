// The API reference: Redoc renders the server's own OpenAPI document (no CDN, no build step).
"use strict";
Redoc.init("/api/v1/openapi.json", { hideDownloadButton: false }, document.getElementById("reference"));
