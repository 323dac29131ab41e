//! The seed's orders service, shared by its per-endpoint functions: the `Order` type, the
//! database connection from `DATABASE_URL`, JSON input with errors that name the field, and
//! the seed's CORS headers on every answer.

use std::time::Duration;

use function_sdk::http::{self, HeaderValue, Method, StatusCode};
pub use function_sdk::{Request, Response};
use mysql_async::{Conn, Opts, OptsBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use mysql_async::{self, params, prelude::*};

/// One order, as the seed stores and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub order_id: i32,
    pub product_id: i32,
    pub quantity: i32,
    pub amount: f32,
    pub shipping: f32,
    pub tax: f32,
    pub shipping_address: String,
}

/// The seed's answer to every write: `{"status":true}`.
pub const STATUS_TRUE: &str = r#"{"status":true}"#;

/// How long connecting to the database may take before the answer is 503.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);

/// Why a request failed, and so which status it gets.
#[derive(Debug)]
pub enum ApiError {
    /// The input is wrong: 400, naming the field.
    BadRequest { field: String, message: String },
    /// The database cannot be reached: 503.
    Unavailable(String),
    /// The database refused the statement, or something else failed: 500.
    Internal(String),
}

/// Server errors that mean "no database right now", not "this statement is wrong": too many
/// connections (1040, 1203: the platform's pool answers 1040 when every session stays busy),
/// and can't connect (2002, 2003: the pool's answer when the database is unreachable).
const UNAVAILABLE_CODES: &[u16] = &[1040, 1203, 2002, 2003, 2006, 2013];

impl From<mysql_async::Error> for ApiError {
    fn from(e: mysql_async::Error) -> Self {
        match e {
            mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
                ApiError::Unavailable(e.to_string())
            }
            mysql_async::Error::Server(ref s) if UNAVAILABLE_CODES.contains(&s.code) => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Connects to `DATABASE_URL`: 503 if it cannot within 2.5 s.
pub async fn connect() -> Result<Conn, ApiError> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        ApiError::Internal("DATABASE_URL is not set in the manifest's [env]".into())
    })?;
    let opts =
        Opts::from_url(&url).map_err(|e| ApiError::Internal(format!("DATABASE_URL: {e}")))?;
    // A fresh instance has no unix socket to switch to.
    let opts = OptsBuilder::from_opts(opts).prefer_socket(false);
    match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(ApiError::Unavailable(
            "connecting to the database timed out".into(),
        )),
    }
}

/// Parses a JSON body; an error names the field at fault.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" {
            "body".to_string()
        } else {
            path
        };
        let message = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("the body is not valid JSON: {inner}")
            }
            _ => inner.to_string(),
        };
        // "missing field `x`" names a field below the path.
        let field = match message.strip_prefix("missing field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or_default();
                if field == "body" {
                    name.to_string()
                } else {
                    format!("{field}.{name}")
                }
            }
            None => field,
        };
        ApiError::BadRequest { field, message }
    })
}

/// The first value of query parameter `name`, as an `i32`.
pub fn query_i32(req: &Request, name: &str) -> Result<i32, ApiError> {
    let raw = function_sdk::query(req, name).ok_or_else(|| ApiError::BadRequest {
        field: name.into(),
        message: format!("the query parameter `{name}` is missing: expected ?{name}=<integer>"),
    })?;
    raw.trim().parse().map_err(|_| ApiError::BadRequest {
        field: name.into(),
        message: format!("`{raw}` is not an integer"),
    })
}

/// Adds the seed's CORS headers.
fn cors(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("api,Keep-Alive,User-Agent,Content-Type"),
    );
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(body.into_bytes());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors(&mut resp);
    resp
}

/// Serves one endpoint: answers `OPTIONS` with the CORS headers, runs `handler` for the
/// rest, and turns its result (a JSON body) or its error into the response. Details of
/// database errors go to stderr (the dispatcher's log), never to the client.
pub fn serve<F, Fut>(handler: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiError>>,
{
    function_sdk::run_async(|req: Request| async move {
        if req.method() == Method::OPTIONS {
            let mut resp = Response::new(Vec::new());
            cors(&mut resp);
            return resp;
        }
        match handler(req).await {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(ApiError::BadRequest { field, message }) => json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "status": false, "field": field, "error": message })
                    .to_string(),
            ),
            Err(ApiError::Unavailable(detail)) => {
                eprintln!("database unavailable: {detail}");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":false,"error":"the database is unavailable; retry shortly"}"#
                        .into(),
                )
            }
            Err(ApiError::Internal(detail)) => {
                eprintln!("error: {detail}");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    r#"{"status":false,"error":"internal error"}"#.into(),
                )
            }
        }
    });
}

/// Serializes an answer.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ApiError::Internal(format!("serializing the answer: {e}")))
}

/// Closes a connection politely; a failure only matters to the log.
pub async fn close(conn: Conn) {
    if let Err(e) = conn.disconnect().await {
        eprintln!("closing the database connection: {e}");
    }
}

/// The seed's INSERT, with named parameters.
pub const INSERT: &str =
    "INSERT INTO orders (order_id, product_id, quantity, amount, shipping, tax, shipping_address) \
     VALUES (:order_id, :product_id, :quantity, :amount, :shipping, :tax, :shipping_address)";

/// The named parameters of an order.
pub fn order_params(o: &Order) -> mysql_async::Params {
    params! {
        "order_id" => o.order_id,
        "product_id" => o.product_id,
        "quantity" => o.quantity,
        "amount" => o.amount,
        "shipping" => o.shipping,
        "tax" => o.tax,
        "shipping_address" => &o.shipping_address,
    }
}
