// Application Insights (workspace-based, on the platform's Log Analytics workspace) for the OpenTelemetry traces of
// the model server and the drift job. Its connection string is written to Key Vault (secret
// appinsights-connection-string, with an expiry renewed by every deployment) and never output; the serving and
// drift identities may read that one secret (the chart mounts it with the Secrets Store CSI driver through
// workload identity). Local (instrumentation key) authentication stays on: the OpenTelemetry exporter then needs no
// token; the key only allows writing telemetry, never reading it.

@description('Name of the Application Insights component.')
@minLength(1)
@maxLength(255)
param name string

@description('Azure region of the component.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Resource ID of the Log Analytics workspace the telemetry is stored in.')
@minLength(1)
param logAnalyticsWorkspaceId string

@description('Days the telemetry is retained.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

@description('Name of the Key Vault (same resource group) receiving the connection string.')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Name of the Key Vault secret holding the connection string.')
@minLength(1)
@maxLength(127)
param secretName string = 'appinsights-connection-string'

@description('Principal IDs (workload identities) that may read that secret.')
param secretReaderPrincipalIds array = []

@description('Expiry of the secret (ISO 8601); every deployment renews it a year ahead.')
param secretExpiry string = dateTimeAdd(utcNow(), 'P1Y')

var vaultSecretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource component 'Microsoft.Insights/components@2020-02-02' = {
  name: name
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'other'
    WorkspaceResourceId: logAnalyticsWorkspaceId
    RetentionInDays: retentionInDays
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource vaultEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  properties: {
    contentType: 'text/plain'
    value: component.properties.ConnectionString
    attributes: {
      enabled: true
      exp: dateTimeToEpoch(secretExpiry)
    }
  }
}

resource secretReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in secretReaderPrincipalIds: {
    name: guid(vaultEntry.id, principalId, vaultSecretsUser)
    scope: vaultEntry
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: vaultSecretsUser
    }
  }
]

@description('Resource ID of the Application Insights component.')
output id string = component.id

@description('Name of the Key Vault entry holding the connection string (the name only, never the value).')
output vaultEntryName string = vaultEntry.name
