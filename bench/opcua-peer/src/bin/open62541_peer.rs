//! The open62541 reference server of the side-by-side benchmark (bench/opcua-peer/run.sh).
//!
//! Serves N Double variables and writes a new value to every one of them R times a second,
//! like the gateway's synthetic load (`simulation.synthetic`). The NodeIds have the gateway's
//! shape, so that one load client subscribes to both servers in the same way:
//! namespace `urn:fabrique-gateway:instances`, string ids
//! `Fabrique/Stations/Synthetic/Load/T000000` ... `T{N-1:06}`, under an object
//! `Fabrique/Stations/Synthetic/Load` in the Objects folder.
//!
//!     open62541_peer --port 4855 --tags 100000 [--rate-hz 10] [--max-notifications 0]
//!
//! Listens on 127.0.0.1 only, security None, anonymous. Prints `ready startup_ms=...` once it
//! accepts connections; runs until killed.
//!
//! Limits changed from open62541's defaults, so that the server is not held back by a setting
//! the gateway does not have: the minimum sampling interval is 0 (with sampling interval 0 a
//! monitored item samples on every write, open62541's report-by-exception) and the notifications
//! per publish response are capped at `--max-notifications` (default 0 = the client's request,
//! itself 0 = unlimited, as the gateway does) instead of 1000.

use std::ffi::{c_void, CString};
use std::io::Write;
use std::ptr;
use std::time::Instant;

use open62541_sys::*;

/// The gateway's instance namespace, so that the client resolves the index the same way.
const NAMESPACE_URI: &str = "urn:fabrique-gateway:instances";
const FOLDER: &str = "Fabrique/Stations/Synthetic/Load";

struct Options {
    port: u16,
    tags: u32,
    rate_hz: f64,
    max_notifications: u32,
}

fn options() -> Options {
    let mut o = Options {
        port: 4855,
        tags: 10_000,
        rate_hz: 10.0,
        max_notifications: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let bad = |key: &str| -> ! {
            eprintln!("{key} takes a number, got {value:?}");
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--port" => o.port = value.parse().unwrap_or_else(|_| bad("--port")),
            "--tags" => o.tags = value.parse().unwrap_or_else(|_| bad("--tags")),
            "--rate-hz" => o.rate_hz = value.parse().unwrap_or_else(|_| bad("--rate-hz")),
            "--max-notifications" => {
                o.max_notifications = value.parse().unwrap_or_else(|_| bad("--max-notifications"))
            }
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    o
}

/// What the repeated write callback needs: the NodeIds (built once) and the round number.
struct Load {
    ids: Vec<UA_NodeId>,
    round: u64,
}

fn data_type(index: u32) -> *const UA_DataType {
    // SAFETY: UA_TYPES is open62541's static table of built-in types; the index is one of its
    // UA_TYPES_* constants.
    unsafe {
        ptr::addr_of!(UA_TYPES)
            .cast::<UA_DataType>()
            .add(index as usize)
    }
}

fn numeric(ns: u16, id: u32) -> UA_NodeId {
    // SAFETY: builds a plain value, no allocation.
    unsafe { UA_NODEID_NUMERIC(ns, id) }
}

fn cstring(s: &str) -> CString {
    CString::new(s).expect("no NUL in names")
}

/// Writes a new value to every variable: one round of the synthetic load.
unsafe extern "C" fn write_round(server: *mut UA_Server, data: *mut c_void) {
    // SAFETY: `data` is the leaked `Load` given to UA_Server_addRepeatedCallback; only this
    // callback (on the server's one thread) touches it.
    let load = unsafe { &mut *data.cast::<Load>() };
    load.round += 1;
    let base = load.round as f64 * 1000.0;
    for (i, id) in load.ids.iter().enumerate() {
        let mut value = base + i as f64;
        let mut variant = UA_Variant::default();
        // SAFETY: the variant points at `value` for the duration of the write, which copies
        // it; the NodeId is passed as a bitwise copy that open62541 only reads.
        unsafe {
            UA_Variant_setScalar(
                &mut variant,
                ptr::addr_of_mut!(value).cast(),
                data_type(UA_TYPES_DOUBLE),
            );
            UA_Server_writeValue(server, ptr::read(id), variant);
        }
    }
}

fn main() {
    let o = options();
    let started = Instant::now();
    // SAFETY: the FFI calls follow open62541's documented setup sequence: a zeroed config,
    // the minimal defaults, then the limits, then the server takes the config over.
    unsafe {
        let mut config = UA_ServerConfig {
            // Warnings only, as the gateway runs in the benchmark (RUST_LOG=warn): at info,
            // open62541 logs every monitored item it creates or deletes.
            logging: UA_Log_Stdout_new(UA_LogLevel::UA_LOGLEVEL_WARNING),
            ..Default::default()
        };
        let status = UA_ServerConfig_setMinimalCustomBuffer(&mut config, o.port, ptr::null(), 0, 0);
        assert_eq!(status, 0, "UA_ServerConfig_setMinimal failed: {status:#x}");

        // Loopback only: replace the default listen URL (all interfaces).
        UA_Array_delete(
            config.serverUrls.cast(),
            config.serverUrlsSize,
            data_type(UA_TYPES_STRING),
        );
        let urls = UA_Array_new(1, data_type(UA_TYPES_STRING)).cast::<UA_String>();
        let url = cstring(&format!("opc.tcp://127.0.0.1:{}", o.port));
        *urls = UA_String_fromChars(url.as_ptr());
        config.serverUrls = urls;
        config.serverUrlsSize = 1;

        config.samplingIntervalLimits.min = 0.0;
        config.maxNotificationsPerPublish = if o.max_notifications == 0 {
            u32::MAX
        } else {
            o.max_notifications
        };
        config.queueSizeLimits.max = 1000;

        let server = UA_Server_newWithConfig(&mut config);
        assert!(!server.is_null(), "UA_Server_newWithConfig failed");

        let uri = cstring(NAMESPACE_URI);
        let ns = UA_Server_addNamespace(server, uri.as_ptr());

        // The folder object, then the variables under it.
        let folder_id_c = cstring(FOLDER);
        let folder_id = UA_NODEID_STRING_ALLOC(ns, folder_id_c.as_ptr());
        let mut object = ptr::read(&UA_ObjectAttributes_default);
        let load_name = cstring("Load");
        object.displayName = UA_LOCALIZEDTEXT_ALLOC(c"".as_ptr(), load_name.as_ptr());
        let mut browse = UA_QUALIFIEDNAME_ALLOC(ns, load_name.as_ptr());
        let status = UA_Server_addObjectNode(
            server,
            ptr::read(&folder_id),
            numeric(0, UA_NS0ID_OBJECTSFOLDER),
            numeric(0, UA_NS0ID_ORGANIZES),
            ptr::read(&browse),
            numeric(0, UA_NS0ID_BASEOBJECTTYPE),
            ptr::read(&object),
            ptr::null_mut(),
            ptr::null_mut(),
        );
        assert_eq!(status, 0, "adding the Load object failed: {status:#x}");
        UA_clear(
            ptr::addr_of_mut!(object).cast(),
            data_type(UA_TYPES_OBJECTATTRIBUTES),
        );
        UA_clear(
            ptr::addr_of_mut!(browse).cast(),
            data_type(UA_TYPES_QUALIFIEDNAME),
        );

        let mut ids = Vec::with_capacity(o.tags as usize);
        for i in 0..o.tags {
            let name = cstring(&format!("T{i:06}"));
            let id_c = cstring(&format!("{FOLDER}/T{i:06}"));
            let id = UA_NODEID_STRING_ALLOC(ns, id_c.as_ptr());
            let mut attr = ptr::read(&UA_VariableAttributes_default);
            let mut initial = 0.0f64;
            UA_Variant_setScalarCopy(
                &mut attr.value,
                ptr::addr_of_mut!(initial).cast(),
                data_type(UA_TYPES_DOUBLE),
            );
            attr.dataType = ptr::read(&(*data_type(UA_TYPES_DOUBLE)).typeId);
            attr.valueRank = -1;
            attr.displayName = UA_LOCALIZEDTEXT_ALLOC(c"".as_ptr(), name.as_ptr());
            let mut browse = UA_QUALIFIEDNAME_ALLOC(ns, name.as_ptr());
            let status = UA_Server_addVariableNode(
                server,
                ptr::read(&id),
                ptr::read(&folder_id),
                numeric(0, UA_NS0ID_HASCOMPONENT),
                ptr::read(&browse),
                numeric(0, UA_NS0ID_BASEDATAVARIABLETYPE),
                ptr::read(&attr),
                ptr::null_mut(),
                ptr::null_mut(),
            );
            assert_eq!(status, 0, "adding variable {i} failed: {status:#x}");
            // The server copied them: free ours (the dataType NodeId is numeric, nothing to
            // free, but `attr.dataType` is cleared with the rest).
            UA_clear(
                ptr::addr_of_mut!(attr).cast(),
                data_type(UA_TYPES_VARIABLEATTRIBUTES),
            );
            UA_clear(
                ptr::addr_of_mut!(browse).cast(),
                data_type(UA_TYPES_QUALIFIEDNAME),
            );
            ids.push(id);
        }

        let load = Box::into_raw(Box::new(Load { ids, round: 0 }));
        let mut callback_id = 0u64;
        let status = UA_Server_addRepeatedCallback(
            server,
            Some(write_round),
            load.cast(),
            1000.0 / o.rate_hz,
            &mut callback_id,
        );
        assert_eq!(
            status, 0,
            "UA_Server_addRepeatedCallback failed: {status:#x}"
        );

        let status = UA_Server_run_startup(server);
        assert_eq!(status, 0, "UA_Server_run_startup failed: {status:#x}");
        println!(
            "ready startup_ms={} tags={} port={}",
            started.elapsed().as_millis(),
            o.tags,
            o.port
        );
        let _ = std::io::stdout().flush();
        // Runs until the benchmark kills the process.
        loop {
            UA_Server_run_iterate(server, true);
        }
    }
}
