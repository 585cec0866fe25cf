;; echo: a raw process written against ABI.md only.
;;
;; Init arguments: a 24-byte pid. Every message received is sent back to
;; that pid with the same tag (reserved tags are refused by `send`, so
;; EXIT/DOWN messages are dropped).
;;
;; Memory: 0..24 the pid, 32..64 the receive header, 64 KiB.. the payload.
(module
  (import "molt" "receive" (func $receive (param i32 i32 i32 i64 i32) (result i32)))
  (import "molt" "msg_read" (func $msg_read (param i32 i32) (result i32)))
  (import "molt" "send" (func $send (param i32 i32 i32 i32 i32) (result i32)))
  (import "molt" "exit_self" (func $exit_self (param i32 i32)))

  (memory (export "memory") 2)
  (data (i32.const 100) "badarg: echo wants a 24-byte pid")

  (func (export "molt_main") (param $args_len i32)
    (local $len i32)
    (if (i32.ne (local.get $args_len) (i32.const 24))
      (then
        (call $exit_self (i32.const 100) (i32.const 32))
        (unreachable)))
    ;; The init arguments are the current message.
    (drop (call $msg_read (i32.const 0) (i32.const 24)))
    (loop $next
      ;; Any tag (count 0), no reference (0), wait for ever (-1), header at 32.
      (drop (call $receive (i32.const 0) (i32.const 0) (i32.const 0) (i64.const -1) (i32.const 32)))
      ;; Copy the payload; a negative result is BUFFER_TOO_SMALL: skip it.
      (local.set $len (call $msg_read (i32.const 65536) (i32.const 65536)))
      (if (i32.ge_s (local.get $len) (i32.const 0))
        (then
          ;; Header bytes 0..4 hold the tag.
          (drop (call $send
            (i32.const 0)
            (i32.load (i32.const 32))
            (i32.const 0)
            (i32.const 65536)
            (local.get $len)))))
      (br $next)))
)
