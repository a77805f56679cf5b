//! The JSON-RPC 2.0 envelope as aria2 speaks it: a call or a batch of calls in, a result or
//! an error object out, with aria2's codes: `1` for what aria2 refuses itself (a wrong secret
//! is `Unauthorized`, an unknown gid names it), the JSON-RPC codes for a message that is not
//! JSON (-32700), not a call (-32600), an unknown method (-32601) and wrong parameters
//! (-32602).

use serde_json::{json, Value};

use super::{methods, Rpc};

/// An error answer: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    /// aria2's answer to a call without the right secret.
    pub(crate) fn unauthorized() -> Self {
        Self::aria2("Unauthorized")
    }

    /// What aria2 itself refuses (code 1), e.g. `GID 2089b05ecca3d829 is not found`.
    pub(crate) fn aria2(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    pub(crate) fn parse() -> Self {
        Self {
            code: -32700,
            message: "Parse error.".into(),
        }
    }

    pub(crate) fn invalid_request() -> Self {
        Self {
            code: -32600,
            message: "Invalid Request.".into(),
        }
    }

    pub(crate) fn no_method() -> Self {
        Self {
            code: -32601,
            message: "Method not found.".into(),
        }
    }

    /// Parameters of the wrong number or type; `detail` says which and what it takes.
    pub(crate) fn params(detail: impl std::fmt::Display) -> Self {
        Self {
            code: -32602,
            message: format!("Invalid params: {detail}"),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// One call: its id (echoed back), method and parameters.
pub(crate) struct Call {
    pub id: Value,
    pub method: String,
    pub params: Vec<Value>,
}

impl Call {
    /// The call in `message`, or the error to answer with its id (`null` when unreadable).
    fn of(message: Value) -> Result<Self, (Value, RpcError)> {
        let Value::Object(mut fields) = message else {
            return Err((Value::Null, RpcError::invalid_request()));
        };
        let id = fields.remove("id").unwrap_or(Value::Null);
        let Some(Value::String(method)) = fields.remove("method") else {
            return Err((id, RpcError::invalid_request()));
        };
        let params = match fields.remove("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(params)) => params,
            Some(_) => return Err((id, RpcError::params("params must be an array"))),
        };
        Ok(Self { id, method, params })
    }
}

/// The answer to `body`: one response, an array for a batch, `None` for an empty batch.
pub(crate) async fn answer(rpc: &Rpc, body: &[u8]) -> Option<Value> {
    let message: Value = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(_) => return Some(response(Value::Null, Err(RpcError::parse()))),
    };
    match message {
        Value::Array(calls) if calls.is_empty() => {
            Some(response(Value::Null, Err(RpcError::invalid_request())))
        }
        Value::Array(calls) => {
            let each = async {
                let mut answers = Vec::with_capacity(calls.len());
                for call in calls {
                    answers.push(one(rpc, call).await);
                }
                Value::Array(answers)
            };
            // Answered once the batch's changes are written, or with the reason they are not.
            Some(match rpc.queue().batched(each).await {
                Ok(answers) => answers,
                Err(e) => response(
                    Value::Null,
                    Err(RpcError::aria2(shoal_core::chain::chain(&e))),
                ),
            })
        }
        call => Some(one(rpc, call).await),
    }
}

async fn one(rpc: &Rpc, message: Value) -> Value {
    match Call::of(message) {
        Ok(call) => {
            let result = methods::call(rpc, &call.method, call.params).await;
            response(call.id, result)
        }
        Err((id, error)) => response(id, Err(error)),
    }
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({ "id": id, "jsonrpc": "2.0", "result": result }),
        Err(error) => json!({ "id": id, "jsonrpc": "2.0", "error": error.to_value() }),
    }
}

/// A notification as aria2 sends it over the WebSocket.
pub(crate) fn notification(method: &str, gid: &str) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": [{ "gid": gid }] })
}
