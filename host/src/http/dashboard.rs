//! The dashboard: three static files compiled into the binary (no build
//! step, nothing fetched at run time), served at `/`, `/app.js` and
//! `/style.css`. It reads everything through the JSON API.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Files change only with the binary; browsers may keep them briefly.
const CACHE: &str = "no-cache";

pub(crate) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        INDEX,
    )
}

pub(crate) async fn app() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        APP,
    )
}

pub(crate) async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        STYLE,
    )
}
