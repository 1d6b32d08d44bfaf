//! What the application logs, captured for assertions: one global subscriber per test process
//! writing into a buffer. Tests run in parallel, so each finds its own lines by a request id
//! it chose.

use std::io::Write;
use std::sync::{Arc, Mutex, Once, OnceLock};

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
static INSTALL: Once = Once::new();

fn buffer() -> Arc<Mutex<Vec<u8>>> {
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new()))).clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
            .with_writer(|| Capture(buffer()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The captured lines that contain `needle`.
pub fn lines_with(needle: &str) -> Vec<String> {
    let text = buffer()
        .lock()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
}
