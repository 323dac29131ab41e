//! `POST /notify`: wraps the JSON body in an event and POSTs it to `NOTIFY_URL` (from the
//! manifest's `[env]`) with `hyper_wasi`'s client, then reports what the receiver said.

use function_sdk::{text, Request, Response};

fn main() {
    function_sdk::run_async(|req: Request| async move {
        match notify(req).await {
            Ok(resp) => resp,
            Err(e) => {
                eprintln!("notify failed: {e}");
                let mut resp = text(502, r#"{"delivered":false}"#);
                resp.headers_mut().insert(
                    "content-type",
                    function_sdk::http::HeaderValue::from_static("application/json"),
                );
                resp
            }
        }
    });
}

async fn notify(req: Request) -> Result<Response, Box<dyn std::error::Error>> {
    let url = std::env::var("NOTIFY_URL").map_err(|_| "NOTIFY_URL is not set")?;
    let event: serde_json::Value = match serde_json::from_slice(req.body()) {
        Ok(v) => v,
        Err(e) => return Ok(text(400, format!("the body is not JSON: {e}"))),
    };
    let payload = serde_json::json!({ "source": "notify", "event": event }).to_string();
    let outbound = hyper::Request::post(url.as_str())
        .header("content-type", "application/json")
        .body(hyper::Body::from(payload))?;
    let client = hyper::Client::new();
    let answer = client.request(outbound).await?;
    let status = answer.status().as_u16();
    let body = hyper::body::to_bytes(answer.into_body()).await?;
    let reply = serde_json::json!({
        "delivered": (200..300).contains(&status),
        "status": status,
        "reply": String::from_utf8_lossy(&body),
    });
    let mut resp = text(200, reply.to_string());
    resp.headers_mut().insert(
        "content-type",
        function_sdk::http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
