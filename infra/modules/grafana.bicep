// Azure Managed Grafana linked to the Azure Monitor workspace. Its managed identity reads the workspace
// (Monitoring Data Reader); named principals get Grafana Admin. API keys are disabled (Entra ID only).

@description('Name of the Grafana instance: 2-23 letters, digits and hyphens.')
@minLength(2)
@maxLength(23)
param name string

@description('Azure region of the instance.')
@minLength(3)
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Grafana SKU.')
@allowed([
  'Essential'
  'Standard'
])
param skuName string = 'Standard'

@description('Resource ID of the Azure Monitor workspace used as the Prometheus data source.')
@minLength(1)
param monitorWorkspaceId string

@description('Object IDs of users or groups that get the Grafana Admin role.')
param adminPrincipalIds array = []

@description('Principal type of adminPrincipalIds.')
@allowed([
  'User'
  'Group'
])
param adminPrincipalType string = 'Group'

@description('Zone redundancy of the instance (Standard SKU only).')
@allowed([
  'Enabled'
  'Disabled'
])
param zoneRedundancy string = 'Disabled'

var monitoringDataReaderRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b0d8363b-8ddd-447d-831f-62ca05bff136')
var grafanaAdminRoleId = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '22926164-76b3-42b3-bc55-97df8dab3e41')

resource monitorWorkspace 'Microsoft.Monitor/accounts@2023-04-03' existing = {
  name: last(split(monitorWorkspaceId, '/'))
}

resource grafana 'Microsoft.Dashboard/grafana@2024-10-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    apiKey: 'Disabled'
    deterministicOutboundIP: 'Disabled'
    publicNetworkAccess: 'Enabled'
    zoneRedundancy: skuName == 'Standard' ? zoneRedundancy : 'Disabled'
    grafanaMajorVersion: '11'
    grafanaIntegrations: {
      azureMonitorWorkspaceIntegrations: [
        {
          azureMonitorWorkspaceResourceId: monitorWorkspaceId
        }
      ]
    }
  }
}

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(monitorWorkspace.id, grafana.id, monitoringDataReaderRoleId)
  scope: monitorWorkspace
  properties: {
    principalId: grafana.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: monitoringDataReaderRoleId
  }
}

resource adminAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in adminPrincipalIds: {
    name: guid(grafana.id, principalId, grafanaAdminRoleId)
    scope: grafana
    properties: {
      principalId: principalId
      principalType: adminPrincipalType
      roleDefinitionId: grafanaAdminRoleId
    }
  }
]

@description('Resource ID of the Grafana instance.')
output id string = grafana.id

@description('Grafana URL.')
output endpoint string = grafana.properties.endpoint
