//! `GET /`: lists the service's endpoints, as the seed service does. The list comes from the
//! manifest's `ENDPOINTS` variable.

fn main() {
    function_sdk::run(|_req| {
        let endpoints = std::env::var("ENDPOINTS").unwrap_or_default();
        function_sdk::text(200, format!("The valid endpoints are {endpoints}"))
    });
}
