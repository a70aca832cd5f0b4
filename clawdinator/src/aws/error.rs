//! AWS errors as one readable line each, naming for a denial the IAM
//! action each operation this project calls needs.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::actions::action_for;

/// An SDK error as one readable line: the operation, the resource, AWS's
/// code and message, and for access denials the IAM action to grant. (The
/// SDK's own `Display` says only "service error"; its debug form dumps the
/// whole raw response.)
pub fn error<E, R>(operation: &str, resource: &str, err: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let target = if resource.is_empty() { String::new() } else { format!(" on {resource}") };
    let cause = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = format!("{:?}", service.raw());
            // Some answers (an emulator's, a proxy's) carry no AWS error code:
            // fall back on the HTTP status so "denied" still reads as denied.
            let http_403 = status.contains("StatusCode(403)");
            let code = e.code().unwrap_or(if http_403 { "AccessDenied (HTTP 403)" } else { "UnknownError" });
            let message = e.message().unwrap_or("no message");
            let mut cause = format!("{code}: {message}");
            if code.contains("AccessDenied")
                || code.contains("UnauthorizedOperation")
                || code == "Forbidden"
                || http_403
            {
                if let Some(action) = action_for(operation) {
                    cause.push_str(&format!(" (the caller needs the IAM permission {action})"));
                }
            }
            cause
        }
        SdkError::TimeoutError(_) => {
            "timeout: no complete answer within the configured timeouts (--*-timeout or CLAWDINATOR_*_TIMEOUT to change them)"
                .to_string()
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            format!("timeout: {}", DisplayErrorContext(&err))
        }
        _ => DisplayErrorContext(&err).to_string(),
    };
    anyhow::anyhow!("{operation}{target} failed: {cause}")
}

/// The AWS error code of an SDK error, when the service answered with one.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// A request AWS may have carried out though its answer never came: a
/// timeout, a connection lost, an unreadable answer or a server error. A
/// write that is not idempotent looks before it is sent again.
pub fn may_have_been_carried_out<E>(err: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(service) => service.raw().status().is_server_error(),
        _ => false,
    }
}
