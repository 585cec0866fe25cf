;; table_forged: a raw process that hands the host a forged table request,
;; a `Delete` whose table name claims 2^62 - 1 bytes in ten bytes of input,
;; and sends what `table_call` returned to the pid of its init arguments
;; (tag 1, the status as a 4-byte little-endian i32).
;;
;; Memory: 0..24 the pid, 100..110 the request, 200..204 the status, 300..
;; the reply buffer.
(module
  (import "molt" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "molt" "send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "table_call" (func $table_call (param i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)
  ;; Variant 1 (`Delete`), then the name's length: varint marker 253 and
  ;; eight little-endian bytes.
  (data (i32.const 100) "\01\fd\ff\ff\ff\ff\ff\ff\ff\3f")

  (func (export "molt_main") (param $args_len i32)
    (drop (call $msg_read (i32.const 0) (i32.const 24)))
    (i32.store (i32.const 200)
      (call $table_call (i32.const 100) (i32.const 10) (i32.const 300) (i32.const 256)))
    (drop (call $send (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 200) (i32.const 4))))
)
