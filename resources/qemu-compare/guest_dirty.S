/* Multiboot guest: writes one word in each 4 KiB page of [REGION_BASE, +REGION_PAGES pages),
   sequentially and forever, paced by the TSC at TSC_PER_PAGE ticks per page. */
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0
        .text
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
        .globl _start
_start:
        cli
        mov $REGION_BASE, %edi      /* first touch every page of the region once, at full speed */
        mov $REGION_PAGES, %ecx
fill:
        movl $1, (%edi)
        add $4096, %edi
        dec %ecx
        jnz fill
        rdtsc
        mov %eax, %esi              /* next deadline (low 32 bits) */
outer:
        mov $REGION_BASE, %edi
        mov $REGION_PAGES, %ecx
page:
        add $TSC_PER_PAGE, %esi
wait:
        rdtsc
        sub %esi, %eax
        js wait                     /* not yet time for this page */
        incl (%edi)
        add $4096, %edi
        dec %ecx
        jnz page
        jmp outer
