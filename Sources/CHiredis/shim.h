// Debian's hiredis 0.14 (libhiredis-dev): the blocking API and its reply reader, used by the Redis storage engine
// on threads of its own (docs/scaling.md). Never the async API: it aborts on sharded pub/sub messages.
#include <hiredis/hiredis.h>
