# check=skip=LegacyKeyValueFormat,MaintainerDeprecated;error=true
FROM alpine
ENV LEGACY value
MAINTAINER skipped
CMD echo not skipped, and an error because of error=true
