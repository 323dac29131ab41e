//! `POST /echo`: answers with the request body, unchanged.

use function_sdk::{http::header::CONTENT_TYPE, Request, Response};

fn main() {
    function_sdk::run(|req: Request| {
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let mut resp = Response::new(req.into_body());
        if let Some(ct) = content_type {
            resp.headers_mut().insert(CONTENT_TYPE, ct);
        }
        resp
    });
}
