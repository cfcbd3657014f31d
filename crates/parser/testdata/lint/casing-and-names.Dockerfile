FROM alpine AS Base
run echo mixed casing
from base as Second
FROM base AS scratch
FROM alpine AS second
CMD ["true"]
