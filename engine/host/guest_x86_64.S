# The guest writer for x86-64 hosts (engine/host/guest.py ships these bytes; a test
# reassembles this file with `as --64` and compares).  It runs in long mode at CPL 3 so that
# it runs natively and its writes take real write-protection faults (see guest.py).
#
# Command buffer at CMD (guest-physical = virtual): a u64 count, then `count` u64 entries.
# An entry is a guest-physical address: bit 0 clear = add 1 to the dword there (a write),
# bit 0 set = read the dword at address - 1.  After the last entry the writer signals the
# host with `out` to port 0x10 (KVM_EXIT_IO) and, when run again, starts on the next batch.
    .code64
    .set CMD, 0x100000
_start:
    mov     $CMD, %esi          # the command buffer
    mov     (%rsi), %rcx        # entries in this batch
    add     $8, %rsi
1:  test    %rcx, %rcx
    jz      3f
    mov     (%rsi), %rax
    add     $8, %rsi
    dec     %rcx
    test    $1, %al
    jnz     2f
    addl    $1, (%rax)          # a write: the page's first dword counts its writes
    jmp     1b
2:  mov     -1(%rax), %edx      # a read
    jmp     1b
3:  out     %al, $0x10          # batch done
    jmp     _start
