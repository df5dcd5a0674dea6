//! Python values to JSON text, for `broadcast(topic, value)` when `value`
//! is not already a str of JSON.
//!
//! Publishing a dict is the call a web app makes most, and going through
//! `json.dumps` cost several times the publication itself. This walk reads
//! the objects through PyO3 and writes the text in one buffer, without a
//! Python call for the built-in types.
//!
//! What each type becomes is promised byte for byte in docs/protocol.md
//! ("How Python values become JSON"), in short:
//! - the types `json.dumps` knows (dict, list, tuple, str, int, float,
//!   bool, None and their subclasses) give exactly what
//!   `json.dumps(value, separators=(",", ":"), ensure_ascii=False,
//!   allow_nan=False)` gives, errors included (NaN and infinities, keys
//!   that are not str/int/float/bool/None, circular references);
//! - `enum.Enum` members give their `.value`; `datetime`, `date`, `time`
//!   their `isoformat()` and `uuid.UUID` its `str()`, as JSON strings;
//!   `decimal.Decimal` its `str()` as a JSON number; a dataclass instance
//!   an object of its fields in definition order;
//! - anything else is a `TypeError` naming the type, as from `json.dumps`.
//!
//! Nesting is bounded ([`MAX_DEPTH`]): deeper values raise `ValueError`
//! instead of exhausting the thread's stack. tests/test_py_json.py checks
//! the output against `json.dumps` and `json.loads` on random values.

use std::cell::Cell;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::Borrowed;
use pyo3::{ffi, intern};
use smallvec::SmallVec;

use super::float_repr;

/// Containers (dicts, lists, tuples, dataclasses, enum values) nested in
/// one another at most. `json.dumps` stops near 1,000 under Python's
/// default recursion limit, so every value it could encode still goes
/// through; a level of this walk takes a few hundred bytes of stack, so
/// the deepest value stays far below a thread's 8 MiB.
pub(crate) const MAX_DEPTH: usize = 1000;

/// Containers nested this deep are tracked without an allocation.
const INLINE_DEPTH: usize = 16;

/// A buffer kept for the next publication when it is no larger than this:
/// publishing reuses it instead of allocating, and a rare large one is
/// not kept alive.
const KEPT_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    /// The text buffer of this thread's last publication, reused by the
    /// next (taken out while in use, so a walk that publishes from inside
    /// a called `isoformat()` gets a fresh one).
    static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The compact JSON text of `value`, as a new str.
///
/// # Errors
/// As [`with_json`].
pub(crate) fn to_json(value: &Bound<'_, PyAny>) -> PyResult<String> {
    with_json(value, str::to_owned)
}

/// Calls `use_text` with the compact JSON text of `value`, written in
/// this thread's reused buffer.
///
/// # Errors
/// `ValueError` for NaN or an infinity (float or Decimal), a circular
/// reference, nesting deeper than [`MAX_DEPTH`], or a str that is not
/// valid Unicode (lone surrogates: `UnicodeEncodeError`); `TypeError` for
/// a type without a JSON form or a dict key that is not str, int, float,
/// bool or None; `RuntimeError` for a dict that changed size while it
/// was read; and whatever a called `isoformat()`, `str()` or `.value`
/// raised.
pub(crate) fn with_json<T>(
    value: &Bound<'_, PyAny>,
    use_text: impl FnOnce(&str) -> T,
) -> PyResult<T> {
    let mut walk = Walk {
        out: BUFFER.take(),
        path: SmallVec::new(),
    };
    let written = walk.value(value);
    let result = written.map(|()| {
        // SAFETY: every byte written is ASCII or was copied whole from a
        // &str (a Python str's UTF-8, itoa's and zmij's digits, serde_json's
        // escaped string), so the buffer is UTF-8: checking it again cost
        // a twentieth of a small publication.
        use_text(unsafe { std::str::from_utf8_unchecked(&walk.out) })
    });
    let mut out = walk.out;
    if out.capacity() <= KEPT_BUFFER_BYTES {
        out.clear();
        BUFFER.set(out);
    }
    result
}

/// One walk over a value: the text so far and the containers being
/// written, outermost first.
struct Walk {
    /// The JSON text written so far.
    out: Vec<u8>,
    /// Addresses of the containers from the root to the current value:
    /// one that reappears here is a circular reference, and the length is
    /// the depth. Only the path matters (a value shared by two branches
    /// is written twice, as `json.dumps` does).
    path: SmallVec<[usize; INLINE_DEPTH]>,
}

impl Walk {
    /// Writes any value: the built-in types first, in the order
    /// `json.dumps` tests them (so a `str` or `int` subclass, an
    /// `IntEnum` say, is written as its `str` or `int`), then the others.
    fn value(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.scalar(value)? {
            return Ok(());
        }
        if let Ok(dict) = value.cast_exact::<PyDict>() {
            return self.dict(dict);
        }
        if let Ok(list) = value.cast_exact::<PyList>() {
            return self.list(list);
        }
        if let Ok(tuple) = value.cast_exact::<PyTuple>() {
            return self.tuple(tuple);
        }
        self.subclass_or_other(value)
    }

    /// Writes a value of an exact built-in scalar type (str, int, float,
    /// None, bool: a pointer comparison each) and returns true, or
    /// returns false for any other value. Writing these runs no Python
    /// code, so a container's item may come here as a borrowed reference.
    fn scalar(&mut self, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(text) = value.cast_exact::<PyString>() {
            self.string(text.to_str()?)?;
        } else if let Ok(number) = value.cast_exact::<PyFloat>() {
            self.float(number.value())?;
        } else if value.is_exact_instance_of::<PyInt>() {
            self.int(value)?;
        } else if value.is_none() {
            self.out.extend_from_slice(b"null");
        } else if let Ok(flag) = value.cast_exact::<PyBool>() {
            let text: &[u8] = if flag.is_true() { b"true" } else { b"false" };
            self.out.extend_from_slice(text);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Subclasses of the built-in types, tested in `json.dumps`'s order,
    /// then the types it does not know.
    #[inline(never)]
    fn subclass_or_other(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(text) = value.cast::<PyString>() {
            return self.string(text.to_str()?);
        }
        // bool cannot be subclassed: an int here is not True or False.
        if value.is_instance_of::<PyInt>() {
            return self.int(value);
        }
        if let Ok(number) = value.cast::<PyFloat>() {
            return self.float(number.value());
        }
        if let Ok(list) = value.cast::<PyList>() {
            return self.list(list);
        }
        if let Ok(tuple) = value.cast::<PyTuple>() {
            return self.tuple(tuple);
        }
        if let Ok(dict) = value.cast::<PyDict>() {
            return self.dict_subclass(dict);
        }
        self.other(value)
    }

    /// The types `json.dumps` refuses that wshub gives a JSON form.
    #[inline(never)]
    fn other(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        let known = KnownTypes::get(py)?;
        if value.is_instance(known.enum_type.bind(py))? {
            self.enter(value)?;
            let inner = value.getattr(intern!(py, "value"))?;
            self.value(&inner)?;
            self.leave();
            return Ok(());
        }
        if value.is_instance(known.date_type.bind(py))?
            || value.is_instance(known.time_type.bind(py))?
        {
            let text = value.call_method0(intern!(py, "isoformat"))?;
            return self.string(text.cast::<PyString>()?.to_str()?);
        }
        if value.is_instance(known.uuid_type.bind(py))? {
            return self.string(value.str()?.to_str()?);
        }
        if value.is_instance(known.decimal_type.bind(py))? {
            return self.decimal(value, known);
        }
        if value
            .get_type()
            .hasattr(intern!(py, "__dataclass_fields__"))?
        {
            return self.dataclass(value, known);
        }
        Err(PyTypeError::new_err(format!(
            "Object of type {} is not JSON serializable",
            value.get_type().name()?
        )))
    }

    /// A JSON string, escaped as `json.dumps(..., ensure_ascii=False)`
    /// escapes it: `"`, `\` and the control characters below U+0020
    /// (`\n` and the like by name, the rest as `\u00XX` in lower-case
    /// hex); everything else as it is. serde_json's escaping is exactly
    /// that.
    fn string(&mut self, text: &str) -> PyResult<()> {
        // Most keys and values need no escape: copied in one go, which
        // costs a third of serde_json's byte-by-byte writer.
        if !text.bytes().any(needs_escape) {
            self.out.reserve(text.len() + 2);
            self.out.push(b'"');
            self.out.extend_from_slice(text.as_bytes());
            self.out.push(b'"');
            return Ok(());
        }
        serde_json::to_writer(&mut self.out, text)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// An int of any size, in the digits of `int.__repr__` (which
    /// `json.dumps` uses, whatever a subclass's own `__repr__`).
    #[inline(never)]
    fn int(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut overflow = 0;
        // SAFETY: `value` is a live int (the caller checked its type) and
        // the GIL is held (`value`'s `Python` token). For an int this call
        // reads the number without running Python code; it reports a
        // value outside i64 through `overflow` instead of raising.
        let small = unsafe { ffi::PyLong_AsLongLongAndOverflow(value.as_ptr(), &mut overflow) };
        if overflow == 0 {
            if small == -1 {
                if let Some(error) = PyErr::take(value.py()) {
                    return Err(error);
                }
            }
            self.out
                .extend_from_slice(itoa::Buffer::new().format(small).as_bytes());
            return Ok(());
        }
        let digits = KnownTypes::get(value.py())?
            .int_repr
            .bind(value.py())
            .call1((value,))?;
        self.out
            .extend_from_slice(digits.cast::<PyString>()?.to_str()?.as_bytes());
        Ok(())
    }

    /// A float as `float.__repr__` writes it (what `json.dumps` sends),
    /// refusing NaN and the infinities, which JSON has no word for.
    #[inline(never)]
    fn float(&mut self, number: f64) -> PyResult<()> {
        if !number.is_finite() {
            return Err(PyValueError::new_err(format!(
                "Out of range float values are not JSON compliant: {}",
                python_float_special(number)
            )));
        }
        float_repr::write(&mut self.out, number);
        Ok(())
    }

    /// `decimal.Decimal`: its digits as a JSON number, exactly as
    /// `Decimal.__str__` writes them (e.g. `1.10`, `1E+2`, `-0`), so no
    /// precision is lost on the way. NaN and infinities are refused like
    /// a float's. `Decimal`'s own `__str__` is called, not a subclass's:
    /// the text goes out unquoted, so it must be a number.
    #[inline(never)]
    fn decimal(&mut self, value: &Bound<'_, PyAny>, known: &KnownTypes) -> PyResult<()> {
        let py = value.py();
        if !value.call_method0(intern!(py, "is_finite"))?.is_truthy()? {
            return Err(PyValueError::new_err(format!(
                "Out of range Decimal values are not JSON compliant: {}",
                value.str()?
            )));
        }
        let text = known.decimal_str.bind(py).call1((value,))?;
        self.out
            .extend_from_slice(text.cast::<PyString>()?.to_str()?.as_bytes());
        Ok(())
    }

    /// A list: its items in order, read by index, so a list that changes
    /// while it is written (only a called `isoformat()` or `.value` could
    /// change it) is never read past its end.
    fn list(&mut self, list: &Bound<'_, PyList>) -> PyResult<()> {
        self.enter(list)?;
        self.out.push(b'[');
        let mut index = 0;
        while index < list.len() {
            if index > 0 {
                self.out.push(b',');
            }
            // SAFETY: the GIL is held, `list` is alive and `index` is
            // below its current length (checked just above, and nothing
            // ran since), so this is a valid borrowed reference to an
            // item, owned below before any Python code can run.
            let item = unsafe {
                let index = ffi::Py_ssize_t::try_from(index).unwrap_or(ffi::Py_ssize_t::MAX);
                let pointer = ffi::PyList_GetItem(list.as_ptr(), index);
                if pointer.is_null() {
                    return Err(PyErr::fetch(list.py()));
                }
                Borrowed::from_ptr(list.py(), pointer)
            };
            // A scalar is written from the borrowed reference; anything
            // else is owned first, as writing it may run Python code
            // (`isoformat()`, `.value`) that could drop it from the list.
            // (Not a method of its own: one more frame per level would
            // not fit the deepest value in a small thread's stack.)
            if !self.scalar(&item)? {
                self.value(&item.to_owned())?;
            }
            index += 1;
        }
        self.out.push(b']');
        self.leave();
        Ok(())
    }

    fn tuple(&mut self, tuple: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.enter(tuple)?;
        self.out.push(b'[');
        for (index, item) in tuple.iter().enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            self.value(&item)?;
        }
        self.out.push(b']');
        self.leave();
        Ok(())
    }

    /// A dict, in its order, read in place. Like Python's own iteration,
    /// a dict whose size changes meanwhile raises `RuntimeError` (PyO3's
    /// iterator would panic instead).
    #[inline(never)]
    fn dict(&mut self, dict: &Bound<'_, PyDict>) -> PyResult<()> {
        self.enter(dict)?;
        self.out.push(b'{');
        let size = dict.len();
        let mut position: ffi::Py_ssize_t = 0;
        let mut first = true;
        let mut may_have_changed = false;
        loop {
            if may_have_changed && dict.len() != size {
                return Err(PyRuntimeError::new_err(
                    "dictionary changed size during iteration",
                ));
            }
            let mut key: *mut ffi::PyObject = std::ptr::null_mut();
            let mut item: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: the GIL is held and `dict` is a live dict. PyDict_Next
            // checks `position` against the dict's current table, so it
            // stays in bounds even if the dict changed; it hands out
            // borrowed references.
            let found =
                unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key, &mut item) };
            if found == 0 {
                break;
            }
            // SAFETY: PyDict_Next returned 1, so both are valid borrowed
            // references into `dict`, which is alive. Writing the key runs
            // no Python code (str, float, bool, None and int keys are read
            // in place; any other is refused), so the dict still holds it
            // meanwhile; the value is owned below before any Python code can
            // run.
            let (key, item) = unsafe {
                (
                    Borrowed::from_ptr(dict.py(), key),
                    Borrowed::from_ptr(dict.py(), item),
                )
            };
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.key(&key)?;
            self.out.push(b':');
            // As in `list`: only a value that is not a scalar can run
            // Python code, which could change the dict meanwhile.
            may_have_changed = !self.scalar(&item)?;
            if may_have_changed {
                self.value(&item.to_owned())?;
            }
        }
        self.out.push(b'}');
        self.leave();
        Ok(())
    }

    /// A dict subclass, through its `items()` as `json.dumps` reads it
    /// (an empty one is `{}` whatever its `items()` says, as there).
    #[inline(never)]
    fn dict_subclass(&mut self, dict: &Bound<'_, PyDict>) -> PyResult<()> {
        if dict.is_empty() {
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        self.enter(dict)?;
        self.out.push(b'{');
        let mut first = true;
        for pair in dict.call_method0(intern!(dict.py(), "items"))?.try_iter()? {
            let pair = pair?;
            let (key, item) = pair
                .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()
                .map_err(|_| PyValueError::new_err("items must return 2-tuples"))?;
            self.member(&mut first, &key, &item)?;
        }
        self.out.push(b'}');
        self.leave();
        Ok(())
    }

    /// A dataclass instance: an object of its fields
    /// (`dataclasses.fields()`, in definition order) and their values.
    #[inline(never)]
    fn dataclass(&mut self, value: &Bound<'_, PyAny>, known: &KnownTypes) -> PyResult<()> {
        let py = value.py();
        self.enter(value)?;
        self.out.push(b'{');
        let mut first = true;
        for field in known
            .dataclass_fields
            .bind(py)
            .call1((value,))?
            .try_iter()?
        {
            let name = field?.getattr(intern!(py, "name"))?;
            let item = value.getattr(name.cast::<PyString>()?)?;
            self.member(&mut first, &name, &item)?;
        }
        self.out.push(b'}');
        self.leave();
        Ok(())
    }

    /// One `"key":value` of an object, after a comma unless it is the
    /// first.
    fn member(
        &mut self,
        first: &mut bool,
        key: &Bound<'_, PyAny>,
        item: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
        self.key(key)?;
        self.out.push(b':');
        self.value(item)
    }

    /// An object's key: `json.dumps` turns str, float, bool, None and int
    /// keys (in that order of tests) into strings and refuses the rest.
    fn key(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(text) = key.cast_exact::<PyString>() {
            return self.string(text.to_str()?);
        }
        if let Ok(text) = key.cast::<PyString>() {
            return self.string(text.to_str()?);
        }
        self.out.push(b'"');
        if let Ok(number) = key.cast::<PyFloat>() {
            self.float(number.value())?;
        } else if let Ok(flag) = key.cast::<PyBool>() {
            let text: &[u8] = if flag.is_true() { b"true" } else { b"false" };
            self.out.extend_from_slice(text);
        } else if key.is_none() {
            self.out.extend_from_slice(b"null");
        } else if key.is_instance_of::<PyInt>() {
            self.int(key)?;
        } else {
            return Err(PyTypeError::new_err(format!(
                "keys must be str, int, float, bool or None, not {}",
                key.get_type().name()?
            )));
        }
        self.out.push(b'"');
        Ok(())
    }

    /// Steps into a container: refuses one already on the path (a
    /// circular reference) or one level too many.
    fn enter(&mut self, container: &Bound<'_, PyAny>) -> PyResult<()> {
        let address = container.as_ptr() as usize;
        if self.path.contains(&address) {
            return Err(PyValueError::new_err("Circular reference detected"));
        }
        if self.path.len() >= MAX_DEPTH {
            return Err(PyValueError::new_err(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.path.push(address);
        Ok(())
    }

    fn leave(&mut self) {
        self.path.pop();
    }
}

/// Whether a byte of a JSON string must be escaped: `"`, `\\` and the
/// control characters (the bytes of other characters never are).
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The standard-library objects the walk needs beyond the built-in types,
/// imported the first time a value needs one (a dict of str and numbers
/// never imports `uuid` or `decimal`).
struct KnownTypes {
    enum_type: Py<PyAny>,
    date_type: Py<PyAny>,
    time_type: Py<PyAny>,
    uuid_type: Py<PyAny>,
    decimal_type: Py<PyAny>,
    /// `decimal.Decimal.__str__`, called on subclasses too.
    decimal_str: Py<PyAny>,
    /// `int.__repr__`, for ints outside i64.
    int_repr: Py<PyAny>,
    /// `dataclasses.fields`.
    dataclass_fields: Py<PyAny>,
}

impl KnownTypes {
    fn get(py: Python<'_>) -> PyResult<&KnownTypes> {
        static KNOWN: PyOnceLock<KnownTypes> = PyOnceLock::new();
        KNOWN.get_or_try_init(py, || {
            let attr = |module: &str, name: &str| -> PyResult<Py<PyAny>> {
                Ok(py.import(module)?.getattr(name)?.unbind())
            };
            let decimal_type = attr("decimal", "Decimal")?;
            Ok(KnownTypes {
                enum_type: attr("enum", "Enum")?,
                date_type: attr("datetime", "date")?,
                time_type: attr("datetime", "time")?,
                uuid_type: attr("uuid", "UUID")?,
                decimal_str: decimal_type.bind(py).getattr("__str__")?.unbind(),
                decimal_type,
                int_repr: py.get_type::<PyInt>().getattr("__repr__")?.unbind(),
                dataclass_fields: attr("dataclasses", "fields")?,
            })
        })
    }
}

/// How `float.__repr__` spells a non-finite float, for error messages.
fn python_float_special(number: f64) -> &'static str {
    if number.is_nan() {
        "nan"
    } else if number > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}
