# escape=`

FROM mcr.microsoft.com/windows/servercore:ltsc2022
SHELL ["powershell", "-Command", "$ErrorActionPreference = 'Stop';"]
ENV GOPATH C:\gopath
RUN Write-Host "building"; `
    New-Item -ItemType Directory -Path C:\build | Out-Null; `
    Set-Location C:\build
COPY ["C:\\src\\app.ps1", "C:/app/"]
WORKDIR C:\app
